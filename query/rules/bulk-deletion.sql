-- id: QH018
-- title: Bulk file deletion or shredding in a container
-- severity: high
-- mitre: T1485, T1070.004
-- description: One process deleting 50 or more files in a minute that were not written in
--   the container while recording (data destruction, a wiper, covering tracks), or shred /
--   wipe run. Deliberately not flagged: a program cleaning up files the container itself
--   wrote (caches, its own temporary files), and deletions that fail.
WITH
-- Paths the container made itself: few rows (one per path), so they are the join's build
-- side (the left input; the engine has no statistics to swap sides by) and the deletions
-- stream past them (an anti join: the deletions of paths it never made). With the deletions
-- on the left, every one of them was held in memory.
made AS (
  SELECT DISTINCT host, container_id, coalesce(path2, path) AS path
  FROM file_writes
  WHERE succeeded AND event IN ('open', 'create', 'mkdir', 'rename', 'link', 'symlink')
),
deleted AS (
  SELECT w.host, w.container_id, w.pid, w.comm, w.time, w.ktime_ns, w.path,
         date_bin(INTERVAL '60 seconds', w.time) AS minute
  FROM made
  RIGHT ANTI JOIN file_writes w
    ON made.host = w.host AND made.container_id = w.container_id AND made.path = w.path
  WHERE w.container_id IS NOT NULL AND w.succeeded AND w.event IN ('unlink', 'rmdir')
),
-- Each burst's first deletion comes from the same aggregate (ties in time broken as the
-- findings' own order would), so the deletions are read once, not again to find it.
bursts AS (
  SELECT host, container_id, pid, minute,
         min(ktime_ns) AS ktime_ns,
         first_value(time ORDER BY ktime_ns, comm, path) AS time,
         first_value(comm ORDER BY ktime_ns, comm, path) AS comm,
         first_value(path ORDER BY ktime_ns, comm, path) AS path,
         count(DISTINCT path) AS files
  FROM deleted
  GROUP BY host, container_id, pid, minute
  HAVING count(DISTINCT path) >= 50
)
SELECT b.time, b.host, b.container_id, b.pid, b.comm, 'file' AS source_table, b.ktime_ns,
       concat(b.comm, ' deleted ', b.files, ' files in a minute, starting with ', b.path)
         AS evidence
FROM bursts b
UNION ALL
SELECT e.time, e.host, e.container_id, e.pid, e.comm, 'process', e.ktime_ns,
       concat(e.program, ': ', array_to_string(e.argv, ' '))
FROM execs e
WHERE e.container_id IS NOT NULL AND e.program IN ('shred', 'wipe', 'srm')
