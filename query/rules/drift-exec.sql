-- id: QH029
-- title: Executed a file that is not in the container's baseline (drift exec)
-- severity: high
-- mitre: T1105, T1036.005
-- description: A process in a container executed a file (the kernel's path of it, relative to
--   the container's root) that the container's latest baseline (`quarry baseline`) does not
--   hold as a file, or holds with another SHA-256 than the one hashed at the exec
--   (`exe_sha256`, through the kernel's own reference to the executed inode). Unlike QH002 it
--   needs no recorded write: a file dropped before recording began, or by a path the recorder
--   did not see, is caught too. Deliberately not flagged: containers without a baseline
--   (overlay containers: `quarry drift` reads their upper directory; the rows know no
--   layers), containers whose latest baseline has a note (it is incomplete), a runtime's own
--   binary executed in the host's mount namespace (host_image), execs whose kernel path is
--   not known (path_resolution other than kernel), and an exec whose hash is not known when
--   its path is in the baseline.
WITH latest AS (
  SELECT container_id, max(time) AS taken FROM baseline GROUP BY container_id
),
base AS (
  SELECT b.container_id, b.path, b.kind, b.sha256, b.time
  FROM baseline b JOIN latest l ON b.container_id = l.container_id AND b.time = l.taken
),
judged AS (
  SELECT container_id, max(time) AS taken FROM base GROUP BY container_id
  HAVING count(CASE WHEN kind = 'note' THEN 1 END) = 0
)
SELECT e.time, e.host, e.container_id, e.pid, e.comm, 'process' AS source_table, e.ktime_ns,
       CASE WHEN b.path IS NULL
            THEN concat('executed ', e.kernel_path, ', not a file of the baseline taken ',
                        CAST(j.taken AS VARCHAR))
            ELSE concat('executed ', e.kernel_path, ' with SHA-256 ', e.exe_sha256,
                        '; the baseline taken ', CAST(j.taken AS VARCHAR), ' has ', b.sha256)
       END AS evidence
FROM execs e
JOIN judged j ON j.container_id = e.container_id
LEFT JOIN base b
  ON b.container_id = e.container_id AND b.path = e.kernel_path AND b.kind = 'file'
WHERE e.path_resolution = 'kernel' AND e.kernel_path IS NOT NULL
  AND e.host_image IS NOT TRUE
  AND (b.path IS NULL
       OR (e.exe_sha256 IS NOT NULL AND b.sha256 IS NOT NULL AND e.exe_sha256 <> b.sha256))
