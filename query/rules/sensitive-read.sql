-- id: QH004
-- title: Sensitive file read in a container
-- severity: high
-- mitre: T1552.001
-- description: Password hashes, sudoers, private keys, cloud and cluster credentials opened
--   from inside a container. Matched on the recorder's normalized absolute path, so
--   `cd /tmp; cat ../etc/shadow`, `//etc//shadow` and `/etc/./shadow` are the same file, and on
--   the path the kernel actually opened (`kernel_path`, from the container's root), so a
--   symlink `/tmp/s -> /etc/shadow` or a second thread rewriting the path buffer after the
--   recorder read it is caught too. Deliberately not
--   flagged: failed opens, and a relative path the recorder could not resolve (`resolution`
--   unresolved: the process was gone before its cwd was known).
SELECT f.time, f.host, f.container_id, f.pid, f.comm, 'file' AS source_table, f.ktime_ns,
       concat(f.comm, ' opened ', coalesce(f.abs_path, f.path),
              CASE WHEN f.kernel_path <> coalesce(f.abs_path, f.path, '')
                   THEN concat(' (kernel: ', f.kernel_path, ')') END) AS evidence
FROM file f
WHERE f.container_id IS NOT NULL AND f.event = 'open' AND f.ret >= 0
  AND (coalesce(f.abs_path, f.path) ~ 
       '^/etc/(shadow|gshadow|sudoers|master\.passwd)$|^/etc/sudoers\.d/|/\.ssh/id_[^/]*$|^/etc/ssh/ssh_host_[^/]*_key$|^/etc/ssl/private/|\.key$|(^|/)[^/]*(private|priv|_rsa|_ecdsa|_ed25519)[^/]*\.pem$|^/(var/)?run/secrets/kubernetes\.io/|/\.aws/credentials$|/\.kube/config$|/\.docker/config\.json$'
       OR f.kernel_path ~
       '^/etc/(shadow|gshadow|sudoers|master\.passwd)$|^/etc/sudoers\.d/|/\.ssh/id_[^/]*$|^/etc/ssh/ssh_host_[^/]*_key$|^/etc/ssl/private/|\.key$|(^|/)[^/]*(private|priv|_rsa|_ecdsa|_ed25519)[^/]*\.pem$|^/(var/)?run/secrets/kubernetes\.io/|/\.aws/credentials$|/\.kube/config$|/\.docker/config\.json$')
