-- id: QH003
-- title: Reverse shell
-- severity: critical
-- mitre: T1059
-- description: A shell that opens a network connection itself, or a shell started by a
--   process (the same one after exec, or its parent) that had just connected out: the
--   classic `nc -e /bin/sh` and `bash -i >& /dev/tcp/...` patterns. The same process and its
--   parent are two branches, each joined on pid: one join on `pid = e.pid OR pid = e.ppid`
--   could only match on host and container and paired every exec with every connection.
SELECT n.time, n.host, n.container_id, n.pid, n.comm, 'net' AS source_table, n.ktime_ns,
       concat('shell ', n.comm, ' connected to ', n.remote_addr, ':', n.remote_port) AS evidence
FROM connections n
WHERE n.direction = 'connect' AND n.succeeded AND n.remote_addr IS NOT NULL
  AND n.comm IN ('sh', 'bash', 'dash', 'ash', 'zsh', 'ksh', 'mksh', 'csh', 'tcsh', 'fish')
UNION ALL
SELECT e.time, e.host, e.container_id, e.pid, e.comm, 'process', e.ktime_ns,
       concat('shell ', e.filename, ' started ', CAST(e.time AS VARCHAR), ' right after pid ',
              n.pid, ' (', n.comm, ') connected to ', n.remote_addr, ':', n.remote_port)
FROM execs e
JOIN connections n
  ON n.host = e.host AND n.container_id = e.container_id AND n.pid = e.pid
WHERE e.program IN ('sh', 'bash', 'dash', 'ash', 'zsh', 'ksh', 'mksh', 'csh', 'tcsh', 'fish')
  AND n.direction = 'connect' AND n.succeeded AND n.remote_addr IS NOT NULL
  AND n.time <= e.time AND n.time >= e.time - INTERVAL '60 seconds'
UNION ALL
SELECT e.time, e.host, e.container_id, e.pid, e.comm, 'process', e.ktime_ns,
       concat('shell ', e.filename, ' started ', CAST(e.time AS VARCHAR), ' right after pid ',
              n.pid, ' (', n.comm, ') connected to ', n.remote_addr, ':', n.remote_port)
FROM execs e
JOIN connections n
  ON n.host = e.host AND n.container_id = e.container_id AND n.pid = e.ppid
WHERE e.program IN ('sh', 'bash', 'dash', 'ash', 'zsh', 'ksh', 'mksh', 'csh', 'tcsh', 'fish')
  AND n.direction = 'connect' AND n.succeeded AND n.remote_addr IS NOT NULL
  AND n.time <= e.time AND n.time >= e.time - INTERVAL '60 seconds'
