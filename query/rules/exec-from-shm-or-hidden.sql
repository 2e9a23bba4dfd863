-- id: QH019
-- title: Program executed from /dev/shm or a hidden directory
-- severity: high
-- mitre: T1564.001, T1036
-- description: An exec whose program (resolved against the process's cwd and normalized)
--   lives in /dev/shm or /run/shm, or below a dot-named directory, by the path given or the
--   file the kernel executed (`kernel_path`: a symlink elsewhere pointing there). Deliberately not flagged:
--   dot-named files in ordinary directories (see QH015 for those in temporary ones).
--   Per-user tool directories such as ~/.local/bin are flagged.
SELECT e.time, e.host, e.container_id, e.pid, e.comm, 'process' AS source_table, e.ktime_ns,
       concat('executed ', coalesce(e.exe_path, e.filename), ' [',
              array_to_string(e.argv, ' '), ']') AS evidence
FROM execs e
WHERE e.container_id IS NOT NULL
  AND (coalesce(e.exe_path, e.filename) ~ '^/(dev|run)/shm/|/\.[^/]+/'
       OR e.kernel_path ~ '^/(dev|run)/shm/|/\.[^/]+/')
