-- id: QH013
-- title: Packet or raw socket created in a container
-- severity: high
-- mitre: T1040, T1095
-- description: socket(2) for AF_PACKET, or a raw IP socket: sniffing, spoofing or a covert
--   channel. Deliberately not flagged: netlink sockets (SOCK_RAW is their normal type; ip and
--   the C library's address lookup use them) and unix sockets. A ping that needs a raw socket
--   is flagged.
SELECT n.time, n.host, n.container_id, n.pid, n.comm, 'net' AS source_table, n.ktime_ns,
       concat(n.comm, ' socket family=', n.family, ' type=', n.protocol,
              ' ret=', coalesce(CAST(n.ret AS VARCHAR), '?')) AS evidence
FROM net n
WHERE n.container_id IS NOT NULL AND n.event = 'socket'
  AND (n.family = 'packet' OR (n.protocol IN ('raw', 'packet') AND n.family IN ('inet', 'inet6')))
