-- id: QH008
-- title: Container escape signal
-- severity: critical
-- mitre: T1611
-- description: From inside a container: mount or unmount, new or joined namespaces, kernel
--   module load, bpf(), or ptrace of another process. The container runtime's own set-up is
--   recognised by what the kernel reported, never by a name: the process still runs a program
--   image the kernel executed in the host's mount namespace (`host_image`: runc init before it
--   executes the container's entrypoint). A binary copied into the container and named runc,
--   or run from a memfd there, was executed inside the container's namespace and is flagged.
--   Deliberately not flagged: the runtime's set-up calls themselves.
SELECT p.time, p.host, p.container_id, p.pid, p.comm, 'process' AS source_table, p.ktime_ns,
       concat(p.comm, ' ', p.event,
              CASE WHEN p.detail IS NOT NULL THEN concat(' ', p.detail) END,
              CASE WHEN p.target_pid IS NOT NULL THEN concat(' target pid ', p.target_pid) END,
              CASE WHEN p.flags IS NOT NULL THEN concat(' flags=', p.flags) END,
              ' ret=', coalesce(CAST(p.ret AS VARCHAR), '?')) AS evidence
FROM process p
WHERE p.container_id IS NOT NULL
  AND p.host_image IS NOT TRUE
  AND (p.event IN ('mount', 'umount', 'unshare', 'setns', 'init_module', 'finit_module', 'bpf')
       OR (p.event = 'ptrace' AND p.target_pid IS NOT NULL AND p.target_pid <> p.pid))
