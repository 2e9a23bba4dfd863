-- id: QH026
-- title: File made executable after it was written in the container
-- severity: medium
-- mitre: T1222.002, T1105
-- description: chmod adding an execute bit to a file that was created or written inside the
--   container while recording: a dropped payload being prepared, before (or without) its
--   execution (QH002 catches the execution). Deliberately not flagged: chmod of files from
--   the image, and chmod that removes execute bits.
SELECT c.time, c.host, c.container_id, c.pid, c.comm, 'file' AS source_table, c.ktime_ns,
       concat(c.comm, ' made ', c.path, ' executable (mode ', c.mode, '), written by pid ',
              w.pid, ' (', w.comm, ') at ', CAST(w.time AS VARCHAR)) AS evidence
FROM file_writes c
JOIN file_writes w
  ON w.host = c.host AND w.container_id = c.container_id
 AND coalesce(w.path2, w.path) = c.path
 AND w.ktime_ns < c.ktime_ns AND w.succeeded
 AND w.event IN ('open', 'create', 'rename', 'link')
WHERE c.container_id IS NOT NULL AND c.succeeded AND c.event = 'chmod'
  AND (CAST(c.mode AS BIGINT) & 73) <> 0
