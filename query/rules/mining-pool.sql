-- id: QH028
-- title: Connection to a crypto-mining pool port
-- severity: high
-- mitre: T1496
-- description: A connection attempt from a container to a port mining pools use for the
--   stratum protocol (3333-3336, 3357, 4444, 5555, 5556, 5588, 5730, 6099, 6666, 7777, 7778,
--   9332, 14433, 14444, 45560, 45700), or a program started with a stratum URL. Deliberately
--   not flagged: the common web ports miners sometimes use (80, 443, 8080), which ordinary
--   services share.
SELECT n.time, n.host, n.container_id, n.pid, n.comm, 'net' AS source_table, n.ktime_ns,
       concat(n.comm, ' connect to ', n.remote_addr, ':', n.remote_port,
              CASE WHEN n.succeeded THEN '' ELSE ' (failed)' END) AS evidence
FROM connections n
WHERE n.container_id IS NOT NULL AND n.direction = 'connect'
  AND n.remote_port IN (3333, 3334, 3335, 3336, 3357, 4444, 5555, 5556, 5588, 5730, 6099,
                        6666, 7777, 7778, 9332, 14433, 14444, 45560, 45700)
UNION ALL
SELECT e.time, e.host, e.container_id, e.pid, e.comm, 'process', e.ktime_ns,
       concat(e.program, ': ', array_to_string(e.argv, ' '))
FROM execs e
WHERE e.container_id IS NOT NULL AND array_to_string(e.argv, ' ') ~* 'stratum\+(tcp|ssl|tls)://'
