-- id: QH001
-- title: Shell spawned in a container
-- severity: medium
-- mitre: T1059.004
-- description: A shell started inside a container by something other than the container's
--   own entrypoint: an interactive `exec` into the container or a process that spawned one.
SELECT e.time, e.host, e.container_id, e.pid, e.comm, 'process' AS source_table, e.ktime_ns,
       concat('shell ', e.filename, ' [', array_to_string(e.argv, ' '), '] started by pid ',
              e.ppid) AS evidence
FROM execs e
WHERE e.container_id IS NOT NULL
  AND e.program IN ('sh', 'bash', 'dash', 'ash', 'zsh', 'ksh', 'mksh', 'csh', 'tcsh', 'fish')
  AND NOT EXISTS (SELECT 1 FROM container c
                  WHERE c.container_id = e.container_id AND c.init_pid = e.pid)
