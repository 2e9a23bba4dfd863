-- id: QH025
-- title: Search for private keys or passwords in a container
-- severity: medium
-- mitre: T1552.001, T1552.004
-- description: find, grep, rg, ag, ack or locate run with a key or password name in its
--   arguments (id_rsa, .pem, .key, authorized_keys, password, credential, secret, aws, kube
--   config, BEGIN ... PRIVATE KEY). Deliberately not flagged: these tools over other names.
--   `grep root /etc/passwd` names passwd and is flagged.
SELECT e.time, e.host, e.container_id, e.pid, e.comm, 'process' AS source_table, e.ktime_ns,
       concat(e.program, ': ', array_to_string(e.argv, ' ')) AS evidence
FROM execs e
WHERE e.container_id IS NOT NULL
  AND e.program IN ('find', 'grep', 'egrep', 'fgrep', 'rg', 'ag', 'ack', 'locate')
  AND array_to_string(e.argv, ' ') ~*
      'id_(rsa|dsa|ecdsa|ed25519)|\.pem|\.key( |$|")|\.p12|\.pfx|authorized_keys|passw(or)?d|credential|secret|aws_|\.aws|kube/?config|private key'
