-- Questions a post-mortem asks of a Quarry store, one query each, in the order a responder
-- usually asks them. Run them all (each result printed as a table):
--
--   quarry sql --store /var/lib/quarry/store < examples/hunting.sql
--
-- or one at a time: `quarry sql "..."` with the query's text. Narrow a question to one
-- container by adding `AND container_id LIKE '3f2a%'` (an id prefix; `quarry ps --all` lists
-- them) and to a time window with `AND time >= TIMESTAMP '2026-11-28T14:00:00Z'`; the store's
-- partitions prune on `dt` and `hour` too (`AND dt = '2026-11-28' AND hour >= '14'`).
-- The host's own rows have container_id NULL.

-- 1. Which containers ran, from which image, and when were they first and last seen?
SELECT coalesce(name, substr(container_id, 1, 12)) AS container, image, runtime,
       min(first_seen) AS first_seen, max(last_seen) AS last_seen, max(events) AS events
FROM container
GROUP BY 1, 2, 3
ORDER BY first_seen;

-- 2. Is the record complete? Where evidence was lost (ring buffer full, sealer behind, disk
--    full), how much, and when. No rows: nothing was lost.
SELECT since, time AS until, reason, lost_table, sum(lost) AS lost
FROM gap
GROUP BY since, time, reason, lost_table
ORDER BY since;

-- 3. What did responders already do (isolate, snapshot, hold, export), who, and did it work?
SELECT time, action, actor, coalesce(container_name, container_id) AS container, reason, result
FROM action
ORDER BY time;

-- 4. Which programs ran in each container, how often, and when first? A program that ran once,
--    late, is where to look.
SELECT coalesce(substr(container_id, 1, 12), 'host') AS container, program,
       count(*) AS runs, min(time) AS first_run, max(time) AS last_run
FROM execs
GROUP BY 1, 2
ORDER BY first_run DESC
LIMIT 50;

-- 5. Who started a shell, and with what? Shells whose parent is not a shell are a classic
--    sign of a web shell or an exploited service.
SELECT first_seen AS time, coalesce(substr(container_id, 1, 12), 'host') AS container, pid,
       image, array_to_string(argv, ' ') AS command, parent_image
FROM processes
WHERE regexp_replace(image, '^.*/', '') IN ('sh', 'bash', 'dash', 'ash', 'zsh', 'busybox')
  AND coalesce(regexp_replace(parent_image, '^.*/', ''), '') NOT IN ('sh', 'bash', 'dash', 'ash', 'zsh')
ORDER BY time DESC
LIMIT 50;

-- 6. Where did they connect to? Outbound connections by destination, with how many succeeded.
SELECT coalesce(substr(container_id, 1, 12), 'host') AS container, remote_addr, remote_port,
       count(*) AS attempts, count(CASE WHEN succeeded THEN 1 END) AS succeeded,
       min(time) AS first, array_to_string(array_agg(DISTINCT comm), ',') AS programs
FROM connections
WHERE direction = 'connect' AND family IN ('inet', 'inet6')
GROUP BY 1, 2, 3
ORDER BY first DESC
LIMIT 50;

-- 7. What did they change on disk outside the usual scratch places? Written, created, renamed
--    or deleted files, newest first.
SELECT time, coalesce(substr(container_id, 1, 12), 'host') AS container, comm, event, path, path2
FROM file_writes
WHERE succeeded
  AND path !~ '^/(proc|sys|dev|run)/'
ORDER BY time DESC
LIMIT 50;

-- 8. Privilege and escape signals: setuid, capset, ptrace, mount, unshare, setns, module
--    loads, bpf, fileless execution. Every one of these in a container deserves a look.
SELECT time, coalesce(substr(container_id, 1, 12), 'host') AS container, pid, comm, event,
       ret, detail
FROM process
WHERE event NOT IN ('fork', 'exec', 'exit')
ORDER BY time DESC
LIMIT 50;

-- 9. What did the newest shell do? The programs its children ran, in order, and how they
--    ended. (`quarry timeline CONTAINER` tells a whole container's story, with the tree.)
WITH shell AS (
  SELECT host, pid, start_ns
  FROM processes
  WHERE regexp_replace(image, '^.*/', '') IN ('sh', 'bash', 'dash', 'ash', 'zsh')
  ORDER BY first_seen DESC
  LIMIT 1
)
SELECT p.first_seen AS time, coalesce(substr(p.container_id, 1, 12), 'host') AS container,
       p.pid, p.image, array_to_string(p.argv, ' ') AS command, p.exit_code, p.exit_signal
FROM processes p
JOIN shell s ON p.host = s.host AND p.ppid = s.pid AND p.parent_start_ns = s.start_ns
ORDER BY time
LIMIT 200;
