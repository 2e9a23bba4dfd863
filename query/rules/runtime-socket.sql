-- id: QH022
-- title: Container runtime socket used from a container
-- severity: critical
-- mitre: T1611, T1609
-- description: A connection to (or an open of) the Docker, containerd, CRI-O or podman API
--   socket from inside a container: whoever holds it can start a privileged container on
--   the host. The socket is recognised by its file name, which the operator's mount chose,
--   not the container (an open by the path given or by the path the kernel opened). Deliberately not flagged: other unix sockets.
SELECT n.time, n.host, n.container_id, n.pid, n.comm, 'net' AS source_table, n.ktime_ns,
       concat(n.comm, ' connected to ', n.unix_path,
              ' ret=', coalesce(CAST(n.ret AS VARCHAR), '?')) AS evidence
FROM net n
WHERE n.container_id IS NOT NULL AND n.event = 'connect'
  AND n.unix_path ~ '(^|/)(docker|containerd|crio|cri-dockerd|podman)\.sock(\.ttrpc)?$'
UNION ALL
SELECT f.time, f.host, f.container_id, f.pid, f.comm, 'file', f.ktime_ns,
       concat(f.comm, ' opened ', coalesce(f.abs_path, f.path))
FROM file f
WHERE f.container_id IS NOT NULL AND f.event = 'open'
  AND (coalesce(f.abs_path, f.path) ~ '(^|/)(docker|containerd|crio|cri-dockerd|podman)\.sock(\.ttrpc)?$'
       OR f.kernel_path ~ '(^|/)(docker|containerd|crio|cri-dockerd|podman)\.sock(\.ttrpc)?$')
