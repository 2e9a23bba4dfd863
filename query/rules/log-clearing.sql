-- id: QH016
-- title: Log file cleared or deleted in a container
-- severity: high
-- mitre: T1070.002
-- description: A live log under /var/log truncated (truncate, or an open with O_TRUNC) or
--   deleted. Deliberately not flagged: log rotation, recognised by what the rotating process
--   did rather than by its name: removing rotated archives (`.1`, `.gz`, dated names), and
--   truncating or recreating a log after the same process copied or renamed it to a rotated
--   name (`<log>.1`, `<log>-20261101`) within the 60 seconds before.
WITH clearing AS (
  SELECT w.host, w.container_id, w.pid, w.comm, w.time, w.ktime_ns, w.event, w.path
  FROM file_writes w
  WHERE w.container_id IS NOT NULL AND w.succeeded AND w.path ~ '^/var/log/'
    AND (w.event IN ('unlink', 'truncate')
         OR (w.event = 'open' AND (CAST(w.flags AS BIGINT) & 512) <> 0))
    AND w.path !~ '\.([0-9]+|gz|xz|bz2|zst|lz4|old)$|[-_.][0-9]{8,10}$'
),
-- A rotated copy is at most 60 seconds older than the clearing, so it lies in the clearing's
-- minute or the one before: each candidate is keyed by its own minute and the next, and the
-- join matches on the minute too; without that key every clearing met every write of its
-- process, however long ago. A rotated name starts with the cleared path, so only writes
-- under /var/log/ are candidates. An anti join keeps the clearings no rotation explains, in
-- one pass: no count per clearing, no second read of them.
rotated AS (
  SELECT w.host, w.pid, w.container_id, w.time, coalesce(w.path2, w.path) AS new_path,
         unnest(make_array(date_bin(INTERVAL '60 seconds', w.time),
                           date_bin(INTERVAL '60 seconds', w.time) + INTERVAL '60 seconds'))
           AS minute
  FROM file_writes w
  WHERE starts_with(coalesce(w.path2, w.path), '/var/log/')
)
SELECT c.time, c.host, c.container_id, c.pid, c.comm, 'file' AS source_table, c.ktime_ns,
       concat(c.comm, ' ', c.event, ' ', c.path) AS evidence
FROM clearing c
LEFT ANTI JOIN rotated r
  ON r.host = c.host AND r.pid = c.pid AND r.container_id = c.container_id
 AND r.minute = date_bin(INTERVAL '60 seconds', c.time)
 AND (starts_with(r.new_path, concat(c.path, '.'))
      OR starts_with(r.new_path, concat(c.path, '-')))
 AND r.time <= c.time AND r.time >= c.time - INTERVAL '60 seconds'
