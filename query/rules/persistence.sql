-- id: QH006
-- title: Persistence planted in a container
-- severity: high
-- mitre: T1053.003, T1098.004, T1546.004
-- description: Cron jobs, SSH authorized keys, shell start-up files, init scripts or a preload
--   library written inside a container.
SELECT w.time, w.host, w.container_id, w.pid, w.comm, 'file' AS source_table, w.ktime_ns,
       concat(w.comm, ' ', w.event, ' ', coalesce(w.path2, w.path)) AS evidence
FROM file_writes w
WHERE w.container_id IS NOT NULL AND w.succeeded
  AND (coalesce(w.path2, w.path) ~
      '^/etc/(cron[^/]*|crontab|anacrontab)(/|$)|^/var/spool/cron/|/\.ssh/authorized_keys2?$|/\.(bashrc|bash_profile|bash_login|profile|zshrc|zprofile)$|^/etc/(profile|bash\.bashrc|environment|zsh/zshrc)$|^/etc/profile\.d/|^/etc/(systemd|init\.d|rc\.d)/|^/etc/rc\.local$|^/etc/ld\.so\.preload$')
