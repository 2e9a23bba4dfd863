-- id: QH012
-- title: Write to a kernel escape or tuning file from a container
-- severity: critical
-- mitre: T1611, T1562
-- description: A container process opened for writing a cgroup release_agent or
--   notify_on_release, /proc/sys (including kernel/core_pattern) or /proc/sysrq-trigger: the
--   classic escapes run a program on the host through these. Matched on the normalized
--   absolute path and on the path the kernel opened (`kernel_path`: through a symlink too).
--   Deliberately not flagged: reads of these files, and failed opens.
SELECT w.time, w.host, w.container_id, w.pid, w.comm, 'file' AS source_table, w.ktime_ns,
       concat(w.comm, ' ', w.event, ' ', w.path) AS evidence
FROM file_writes w
WHERE w.container_id IS NOT NULL AND w.succeeded AND w.event IN ('open', 'create', 'truncate')
  AND (w.path ~ '/(release_agent|notify_on_release)$|^/proc/sys/|^/proc/sysrq-trigger$'
       OR w.kernel_path ~ '/(release_agent|notify_on_release)$|^/proc/sys/|^/proc/sysrq-trigger$')
