-- id: EX001
-- title: Outbound SSH from a container
-- severity: medium
-- mitre: T1021.004
-- description: A site rule, as an example of writing one: our application containers never
--   open SSH sessions, so a connection from a container to port 22 (or 2222), or an SSH client
--   run in one, is lateral movement or exfiltration until shown otherwise. Deliberately not
--   flagged: ssh-keygen and ssh-agent (no connection), and the host's own SSH.
SELECT n.time, n.host, n.container_id, n.pid, n.comm, 'net' AS source_table, n.ktime_ns,
       concat(n.comm, ' connect to ', n.remote_addr, ':', n.remote_port,
              CASE WHEN n.succeeded THEN '' ELSE ' (failed)' END) AS evidence
FROM connections n
WHERE n.container_id IS NOT NULL AND n.direction = 'connect'
  AND n.family IN ('inet', 'inet6') AND n.remote_port IN (22, 2222)
UNION ALL
SELECT e.time, e.host, e.container_id, e.pid, e.comm, 'process', e.ktime_ns,
       concat(e.program, ': ', array_to_string(e.argv, ' '))
FROM execs e
WHERE e.container_id IS NOT NULL
  AND e.program IN ('ssh', 'scp', 'sftp', 'dbclient', 'dropbearmulti')
