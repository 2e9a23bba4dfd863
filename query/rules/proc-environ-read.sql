-- id: QH014
-- title: Another process's environment or memory read in a container
-- severity: high
-- mitre: T1003.007, T1552
-- description: /proc/<pid>/environ or /proc/<pid>/mem (or a thread's) opened by number:
--   secrets in environment variables and process memory. Deliberately not flagged:
--   /proc/self and /proc/thread-self, and failed opens. (Container pids are numbered in the
--   container's namespace, so a process naming its own pid by number is flagged too.) Also
--   matched on the path the kernel opened (`kernel_path`), so a symlink to another process's
--   environ is caught; there /proc/self is the reader's own number, hence excluded by the path
--   given.
SELECT f.time, f.host, f.container_id, f.pid, f.comm, 'file' AS source_table, f.ktime_ns,
       concat(f.comm, ' opened ', coalesce(f.abs_path, f.path),
              CASE WHEN f.kernel_path <> coalesce(f.abs_path, f.path, '')
                   THEN concat(' (kernel: ', f.kernel_path, ')') END) AS evidence
FROM file f
WHERE f.container_id IS NOT NULL AND f.event = 'open' AND f.ret >= 0
  AND (coalesce(f.abs_path, f.path) ~ '^/proc/[0-9]+/(task/[0-9]+/)?(environ|mem)$'
       OR (f.kernel_path ~ '^/proc/[0-9]+/(task/[0-9]+/)?(environ|mem)$'
           AND coalesce(f.abs_path, f.path) !~ '^/proc/(self|thread-self)/'))
