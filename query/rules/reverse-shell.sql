-- id: QH003
-- title: Reverse shell
-- severity: critical
-- mitre: T1059
-- description: A shell that opens a network connection itself, or a shell started by a
--   process (the same one after exec, or its parent) that had just connected out: the
--   classic `nc -e /bin/sh` and `bash -i >& /dev/tcp/...` patterns. The same process and its
--   parent are two branches, each joined on pid: one join on `pid = e.pid OR pid = e.ppid`
--   could only match on host and container and paired every exec with every connection.
-- A connection at most 60 seconds before an exec lies in the exec's minute or the one
-- before: each exec is keyed by both minutes, each connection by its own, and the joins match
-- on the minute, so an exec meets only its process's connections of those two minutes, never
-- all of them. (The execs are the few rows, so they are the ones doubled; only the columns
-- the findings need are kept, since the execs are the joins' build side.)
WITH shell_exec AS (
  SELECT e.time, e.host, e.container_id, e.pid, e.ppid, e.comm, e.ktime_ns, e.filename,
         unnest(make_array(date_bin(INTERVAL '60 seconds', e.time),
                           date_bin(INTERVAL '60 seconds', e.time) - INTERVAL '60 seconds'))
           AS minute
  FROM execs e
  WHERE e.program IN ('sh', 'bash', 'dash', 'ash', 'zsh', 'ksh', 'mksh', 'csh', 'tcsh', 'fish')
),
connected AS (
  SELECT n.time, n.host, n.container_id, n.pid, n.comm, n.remote_addr, n.remote_port,
         date_bin(INTERVAL '60 seconds', n.time) AS minute
  FROM connections n
  WHERE n.direction = 'connect' AND n.succeeded AND n.remote_addr IS NOT NULL
)
SELECT n.time, n.host, n.container_id, n.pid, n.comm, 'net' AS source_table, n.ktime_ns,
       concat('shell ', n.comm, ' connected to ', n.remote_addr, ':', n.remote_port) AS evidence
FROM connections n
WHERE n.direction = 'connect' AND n.succeeded AND n.remote_addr IS NOT NULL
  AND n.comm IN ('sh', 'bash', 'dash', 'ash', 'zsh', 'ksh', 'mksh', 'csh', 'tcsh', 'fish')
UNION ALL
SELECT e.time, e.host, e.container_id, e.pid, e.comm, 'process', e.ktime_ns,
       concat('shell ', e.filename, ' started ', CAST(e.time AS VARCHAR), ' right after pid ',
              n.pid, ' (', n.comm, ') connected to ', n.remote_addr, ':', n.remote_port)
FROM shell_exec e
JOIN connected n
  ON n.host = e.host AND n.container_id = e.container_id AND n.pid = e.pid
 AND n.minute = e.minute
WHERE n.time <= e.time AND n.time >= e.time - INTERVAL '60 seconds'
UNION ALL
SELECT e.time, e.host, e.container_id, e.pid, e.comm, 'process', e.ktime_ns,
       concat('shell ', e.filename, ' started ', CAST(e.time AS VARCHAR), ' right after pid ',
              n.pid, ' (', n.comm, ') connected to ', n.remote_addr, ':', n.remote_port)
FROM shell_exec e
JOIN connected n
  ON n.host = e.host AND n.container_id = e.container_id AND n.pid = e.ppid
 AND n.minute = e.minute
WHERE n.time <= e.time AND n.time >= e.time - INTERVAL '60 seconds'
