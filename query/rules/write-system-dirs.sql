-- id: QH005
-- title: Write below a system directory in a container
-- severity: medium
-- mitre: T1543
-- description: A file changed below /etc, /bin, /sbin, /usr, /lib or /boot inside a running
--   container. Images are built before they run; a running container should not change them.
--   An open for writing is matched on the path the kernel opened too (`kernel_path`).
SELECT w.time, w.host, w.container_id, w.pid, w.comm, 'file' AS source_table, w.ktime_ns,
       concat(w.comm, ' ', w.event, ' ', w.path,
              CASE WHEN w.path2 IS NOT NULL THEN concat(' -> ', w.path2) END) AS evidence
FROM file_writes w
WHERE w.container_id IS NOT NULL AND w.succeeded
  AND (w.path ~ '^/(etc|bin|sbin|usr|lib|lib32|lib64|boot)/'
       OR w.path2 ~ '^/(etc|bin|sbin|usr|lib|lib32|lib64|boot)/'
       OR w.kernel_path ~ '^/(etc|bin|sbin|usr|lib|lib32|lib64|boot)/')
