-- id: QH020
-- title: Shell running a program read from a decoder or downloader
-- severity: high
-- mitre: T1059.004, T1140, T1027
-- description: A shell started with no script argument (it reads its program from stdin)
--   next to a decoder (base64/base32 -d, xxd -r, openssl enc -d, uudecode) or a downloader
--   (wget, curl, nc) started by the same parent within 10 seconds: `echo ... | base64 -d |
--   sh`, `wget -O- ... | sh`. Deliberately not flagged: shells given a script or `-c`
--   (health probes), and interactive shells with nothing piped in.
SELECT s.time, s.host, s.container_id, s.pid, s.comm, 'process' AS source_table, s.ktime_ns,
       concat('shell [', array_to_string(s.argv, ' '), '] reads the output of ', d.program,
              ' [', array_to_string(d.argv, ' '), '] (both started by pid ', s.ppid, ')')
         AS evidence
FROM execs s
JOIN execs d
  ON d.host = s.host AND d.container_id = s.container_id AND d.ppid = s.ppid
 AND d.pid <> s.pid
 AND d.time >= s.time - INTERVAL '10 seconds' AND d.time <= s.time + INTERVAL '10 seconds'
WHERE s.container_id IS NOT NULL
  AND s.program IN ('sh', 'bash', 'dash', 'ash', 'zsh', 'ksh', 'mksh')
  AND (cardinality(s.argv) = 1 OR s.argv[2] IN ('-s', '-', '-i'))
  AND ((d.program IN ('base64', 'base32') AND array_to_string(d.argv, ' ') ~ '(^| )(-d|--decode|-[a-z]*d[a-z]*)( |$)')
       OR (d.program = 'xxd' AND array_to_string(d.argv, ' ') ~ '(^| )-r')
       OR (d.program = 'openssl' AND array_to_string(d.argv, ' ') ~ '(^| )-d( |$)')
       OR d.program IN ('uudecode', 'wget', 'curl', 'nc', 'ncat'))
