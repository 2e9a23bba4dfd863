-- id: QH004
-- title: Sensitive file read in a container
-- severity: high
-- mitre: T1552.001
-- description: Password hashes, sudoers, private keys, cloud and cluster credentials opened
--   from inside a container. Matched on the recorder's normalized absolute path, so
--   `cd /tmp; cat ../etc/shadow`, `//etc//shadow` and `/etc/./shadow` are the same file. Deliberately not
--   flagged: failed opens, and a relative path the recorder could not resolve (`resolution`
--   unresolved: the process was gone before its cwd was known).
SELECT f.time, f.host, f.container_id, f.pid, f.comm, 'file' AS source_table, f.ktime_ns,
       concat(f.comm, ' opened ', coalesce(f.abs_path, f.path)) AS evidence
FROM file f
WHERE f.container_id IS NOT NULL AND f.event = 'open' AND f.ret >= 0
  AND coalesce(f.abs_path, f.path) ~
      '^/etc/(shadow|gshadow|sudoers|master\.passwd)$|^/etc/sudoers\.d/|/\.ssh/id_[^/]*$|^/etc/ssh/ssh_host_[^/]*_key$|^/etc/ssl/private/|\.key$|(^|/)[^/]*(private|priv|_rsa|_ecdsa|_ed25519)[^/]*\.pem$|^/(var/)?run/secrets/kubernetes\.io/|/\.aws/credentials$|/\.kube/config$|/\.docker/config\.json$'
