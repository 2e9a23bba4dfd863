-- id: QH011
-- title: Setuid or setgid bit set in a container
-- severity: high
-- mitre: T1548.001
-- description: A file in a container made setuid or setgid (chmod with S_ISUID/S_ISGID, or
--   created with them): a way back to root for whoever runs it later. Deliberately not
--   flagged: the sticky bit, and failed calls.
SELECT w.time, w.host, w.container_id, w.pid, w.comm, 'file' AS source_table, w.ktime_ns,
       concat(w.comm, ' ', w.event, ' ', coalesce(w.path, concat('fd ', w.fd)), ' mode ',
              CASE WHEN (CAST(w.mode AS BIGINT) & 2048) <> 0 THEN 'setuid ' ELSE '' END,
              CASE WHEN (CAST(w.mode AS BIGINT) & 1024) <> 0 THEN 'setgid ' ELSE '' END,
              '(', w.mode, ')') AS evidence
FROM file_writes w
WHERE w.container_id IS NOT NULL AND w.succeeded
  AND (w.event = 'chmod' OR w.event = 'create'
       OR (w.event = 'open' AND (CAST(w.flags AS BIGINT) & 64) <> 0))
  AND (CAST(w.mode AS BIGINT) & 3072) <> 0
