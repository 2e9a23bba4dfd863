-- id: QH021
-- title: Kernel module load attempted from a container
-- severity: critical
-- mitre: T1547.006, T1611
-- description: init_module or finit_module called (recorded at syscall entry where the
--   kernel has no tracepoints for them, so even a refused attempt shows), or insmod/modprobe
--   executed, inside a container. Deliberately not flagged: lsmod and reading
--   /proc/modules.
SELECT p.time, p.host, p.container_id, p.pid, p.comm, 'process' AS source_table, p.ktime_ns,
       concat(p.comm, ' ', p.event, CASE WHEN p.detail IS NOT NULL THEN concat(' ', p.detail) END,
              ' ret=', coalesce(CAST(p.ret AS VARCHAR), 'not seen')) AS evidence
FROM process p
WHERE p.container_id IS NOT NULL AND p.event IN ('init_module', 'finit_module')
UNION ALL
SELECT e.time, e.host, e.container_id, e.pid, e.comm, 'process', e.ktime_ns,
       concat(e.program, ': ', array_to_string(e.argv, ' '))
FROM execs e
WHERE e.container_id IS NOT NULL AND e.program IN ('insmod', 'modprobe')
