-- id: QH007
-- title: Privilege change to root or capability change in a container
-- severity: high
-- mitre: T1548
-- description: A process inside a container asked to become root (setuid family with id 0)
--   or changed its capability sets. Deliberately not flagged: the container runtime dropping
--   to the configured user and capabilities, recognised by the kernel's facts (its program
--   image was executed in the host's mount namespace, `host_image`), never by its name.
SELECT p.time, p.host, p.container_id, p.pid, p.comm, 'process' AS source_table, p.ktime_ns,
       concat(p.comm, ' ', p.event,
              CASE WHEN p.uid IS NOT NULL THEN concat(' uid=', p.uid) END,
              CASE WHEN p.euid IS NOT NULL THEN concat(' euid=', p.euid) END,
              CASE WHEN p.gid IS NOT NULL THEN concat(' gid=', p.gid) END,
              CASE WHEN p.flags IS NOT NULL THEN concat(' effective caps=', p.flags) END,
              ' ret=', coalesce(CAST(p.ret AS VARCHAR), '?')) AS evidence
FROM process p
WHERE p.container_id IS NOT NULL AND coalesce(p.ret, 0) = 0
  AND p.host_image IS NOT TRUE
  AND ((p.event IN ('setuid', 'setreuid', 'setresuid') AND (p.uid = 0 OR p.euid = 0))
       OR (p.event IN ('setgid', 'setregid', 'setresgid') AND (p.gid = 0 OR p.egid = 0))
       OR p.event = 'capset')
