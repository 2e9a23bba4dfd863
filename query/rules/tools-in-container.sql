-- id: QH009
-- title: Package manager or network tool run in a container
-- severity: medium
-- mitre: T1105
-- description: Installing software or fetching, scanning and tunnelling from inside a running
--   container (busybox applets included).
SELECT e.time, e.host, e.container_id, e.pid, e.comm, 'process' AS source_table, e.ktime_ns,
       concat(e.program, ': ', array_to_string(e.argv, ' ')) AS evidence
FROM execs e
WHERE e.container_id IS NOT NULL
  AND e.program IN ('apt', 'apt-get', 'aptitude', 'dpkg', 'yum', 'dnf', 'rpm', 'apk', 'pip',
                    'pip3', 'npm', 'gem', 'curl', 'wget', 'nc', 'ncat', 'netcat', 'socat',
                    'nmap', 'masscan', 'tcpdump', 'telnet', 'ftp', 'tftp', 'ssh', 'scp')
