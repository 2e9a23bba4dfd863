-- id: QH023
-- title: Process injection: ptrace attach or /proc/<pid>/mem write
-- severity: critical
-- mitre: T1055.008
-- description: ptrace ATTACH, SEIZE or POKE* of another process, or /proc/<pid>/mem opened
--   for writing, inside a container. Deliberately not flagged: PTRACE_TRACEME (a debugger's
--   own child), failed calls, and the container runtime (its image was executed in the
--   host's mount namespace, `host_image`). A debugger such as gdb or strace attaching is
--   flagged.
SELECT p.time, p.host, p.container_id, p.pid, p.comm, 'process' AS source_table, p.ktime_ns,
       concat(p.comm, ' ptrace ', p.detail, ' target pid ', p.target_pid) AS evidence
FROM process p
WHERE p.container_id IS NOT NULL AND p.event = 'ptrace' AND coalesce(p.ret, 0) = 0
  AND p.host_image IS NOT TRUE
  AND p.flags IN (4, 5, 6, 16, 16902) AND p.target_pid IS NOT NULL AND p.target_pid <> p.pid
UNION ALL
SELECT w.time, w.host, w.container_id, w.pid, w.comm, 'file', w.ktime_ns,
       concat(w.comm, ' opened ', w.path, ' for writing')
FROM file_writes w
WHERE w.container_id IS NOT NULL AND w.succeeded AND w.event = 'open'
  AND w.path ~ '^/proc/[0-9]+/(task/[0-9]+/)?mem$'
