-- id: QH027
-- title: Link to a sensitive file created in a container
-- severity: high
-- mitre: T1552.001, T1003.008
-- description: A hard or symbolic link whose target is a password or sudo file, an SSH key
--   or a process's root or memory (/etc/shadow, /etc/sudoers, /etc/pam.conf, ~/.ssh/id_*,
--   /proc/<pid>/root): a way to read them through another name or to redirect a privileged
--   writer. Symlink targets are matched as written, also relative ones (`../etc/shadow`).
--   Deliberately not flagged: links to other files.
SELECT w.time, w.host, w.container_id, w.pid, w.comm, 'file' AS source_table, w.ktime_ns,
       concat(w.comm, ' ', w.event, ' ', w.path2, ' -> ', w.path) AS evidence
FROM file_writes w
WHERE w.container_id IS NOT NULL AND w.succeeded AND w.event IN ('link', 'symlink')
  AND w.path ~ '(^|/)etc/(shadow|gshadow|sudoers|pam\.conf|master\.passwd)$|(^|/)etc/sudoers\.d/|/\.ssh/id_[^/]*$|(^|/)proc/[0-9]+/(root|mem|environ)(/|$)'
