-- id: QH010
-- title: Fileless execution from memory (memfd)
-- severity: critical
-- mitre: T1620
-- description: A program executed from a file descriptor (a memfd, /proc/self/fd/N,
--   /dev/fd/N, execveat with an empty path), or executable memory mapped by a process that
--   created a memfd. Deliberately not flagged: the runtime's own re-execution from a memfd
--   (recognised by the kernel's facts inside containers, see QH008) and .NET's JIT mappings.
SELECT e.time, e.host, e.container_id, e.pid, e.comm, 'process' AS source_table, e.ktime_ns,
       concat('executed from a file descriptor: ', e.filename, ' [',
              array_to_string(e.argv, ' '), ']') AS evidence
FROM execs e
WHERE (e.filename ~ '^/(proc/[^/]+|dev)/fd/' OR e.filename = '' OR e.filename LIKE 'memfd:%')
  -- runc re-executes itself from a sealed memfd copy (its CVE-2019-5736 defence) before it
  -- enters the container: the kernel executed that image in the host's mount namespace. On
  -- the host itself (no container) only its argv tells it apart.
  AND e.host_image IS NOT TRUE
  AND (e.container_id IS NULL AND e.argv[1] ~ '(^|/)runc$' AND e.argv[2] = 'init') IS NOT TRUE
UNION ALL
SELECT x.time, x.host, x.container_id, x.pid, x.comm, 'process', x.ktime_ns,
       concat(x.comm, ' ', x.event, ' after memfd_create(', coalesce(m.detail, ''), ')')
FROM process x
JOIN process m
  ON m.host = x.host AND m.pid = x.pid AND m.container_id = x.container_id
 AND m.event = 'memfd_create'
WHERE x.container_id IS NOT NULL AND x.event IN ('mmap_exec', 'mprotect_exec')
  AND m.time <= x.time AND m.time >= x.time - INTERVAL '60 seconds'
  -- .NET's JIT double-maps code through a memfd of this name.
  AND coalesce(m.detail, '') NOT LIKE 'doublemapper%'
