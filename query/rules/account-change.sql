-- id: QH024
-- title: User or password change in a container
-- severity: high
-- mitre: T1136.001, T1098
-- description: An account tool run (passwd, useradd, usermod, userdel, adduser, deluser,
--   chpasswd, chage, groupadd, gpasswd, vipw, newusers) or the account files written
--   (/etc/passwd, /etc/shadow, /etc/group, /etc/gshadow, /etc/sudoers, /etc/sudoers.d/) in a
--   running container; a write is matched on the path given and on the path the kernel
--   opened (`kernel_path`: a symlink to /etc/shadow opened for writing). Deliberately not flagged: reading these files (see QH004) and
--   failed writes.
SELECT e.time, e.host, e.container_id, e.pid, e.comm, 'process' AS source_table, e.ktime_ns,
       concat(e.program, ': ', array_to_string(e.argv, ' ')) AS evidence
FROM execs e
WHERE e.container_id IS NOT NULL
  AND e.program IN ('passwd', 'useradd', 'usermod', 'userdel', 'adduser', 'deluser',
                    'chpasswd', 'chage', 'groupadd', 'groupmod', 'gpasswd', 'vipw', 'vigr',
                    'newusers', 'addgroup', 'delgroup')
UNION ALL
SELECT w.time, w.host, w.container_id, w.pid, w.comm, 'file', w.ktime_ns,
       concat(w.comm, ' ', w.event, ' ', coalesce(w.path2, w.path))
FROM file_writes w
WHERE w.container_id IS NOT NULL AND w.succeeded
  AND w.event IN ('open', 'create', 'truncate', 'rename', 'link', 'unlink')
  AND (coalesce(w.path2, w.path) ~ '^/etc/(passwd|shadow|group|gshadow|sudoers)$|^/etc/sudoers\.d/'
       OR w.kernel_path ~ '^/etc/(passwd|shadow|group|gshadow|sudoers)$|^/etc/sudoers\.d/')
