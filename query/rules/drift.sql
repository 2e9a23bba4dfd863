-- id: QH002
-- title: Binary written in the container, then executed (drift)
-- severity: high
-- mitre: T1105
-- description: A file created or rewritten inside the container (or renamed into place) is
--   later executed there: the container runs code that was not in its image. Both sides are
--   the recorder's normalized absolute paths (the exec resolved against the process's cwd),
--   so `./dropper` run from /tmp matches the write of /tmp/dropper; and the kernel's paths of
--   both (`kernel_path`: the file opened for writing, the file executed), so a write and an
--   exec through different symlinks or mounts of one file match. Deliberately not
--   flagged: executing image files never written while recording.
SELECT e.time, e.host, e.container_id, e.pid, e.comm, 'process' AS source_table, e.ktime_ns,
       concat('executed ', coalesce(e.exe_path, e.filename), ', written by pid ', w.pid,
              ' (', w.comm, ') at ', CAST(w.time AS VARCHAR)) AS evidence
FROM execs e
JOIN file_writes w
  ON w.host = e.host AND w.container_id = e.container_id
 AND w.path = coalesce(e.exe_path, e.filename)
WHERE w.succeeded AND w.time <= e.time
  AND w.event IN ('open', 'create', 'truncate', 'chmod')
UNION ALL
SELECT e.time, e.host, e.container_id, e.pid, e.comm, 'process', e.ktime_ns,
       concat('executed ', coalesce(e.exe_path, e.filename), ', moved into place by pid ',
              w.pid, ' (', w.comm, ') at ', CAST(w.time AS VARCHAR))
FROM execs e
JOIN file_writes w
  ON w.host = e.host AND w.container_id = e.container_id
 AND w.path2 = coalesce(e.exe_path, e.filename)
WHERE w.succeeded AND w.time <= e.time AND w.event IN ('rename', 'link')
UNION ALL
SELECT e.time, e.host, e.container_id, e.pid, e.comm, 'process', e.ktime_ns,
       concat('executed ', e.kernel_path, ' (as ', coalesce(e.exe_path, e.filename),
              '), written by pid ', w.pid, ' (', w.comm, ') as ', w.path, ' at ',
              CAST(w.time AS VARCHAR))
FROM execs e
JOIN file_writes w
  ON w.host = e.host AND w.container_id = e.container_id
 AND w.kernel_path = e.kernel_path
WHERE w.succeeded AND w.time <= e.time
  AND w.event IN ('open', 'create', 'truncate')
  -- The first branch already has the pairs whose given paths agree.
  AND w.path IS DISTINCT FROM coalesce(e.exe_path, e.filename)
