-- id: QH015
-- title: Hidden file or directory created in a temporary directory
-- severity: medium
-- mitre: T1564.001
-- description: A dot-named file or directory created (or renamed, linked or symlinked into
--   place) anywhere below /tmp, /var/tmp or /dev/shm in a container: where droppers hide.
--   Deliberately not flagged: writes to dot-files that already existed (an open without
--   O_CREAT), and failed calls.
SELECT w.time, w.host, w.container_id, w.pid, w.comm, 'file' AS source_table, w.ktime_ns,
       concat(w.comm, ' ', w.event, ' ', coalesce(w.path2, w.path)) AS evidence
FROM file_writes w
WHERE w.container_id IS NOT NULL AND w.succeeded
  AND (w.event IN ('create', 'mkdir', 'rename', 'link', 'symlink')
       OR (w.event = 'open' AND (CAST(w.flags AS BIGINT) & 64) <> 0))
  AND coalesce(w.path2, w.path) ~ '^/(tmp|var/tmp|dev/shm)/([^/]+/)*\.[^/]+$'
