//! The named views a responder reaches for before writing SQL of their own.
//!
//! - `events`: process, file, network, responder-action, gap and alert rows in one time-ordered shape
//!   (`source`, `event`, a readable `summary`), the raw material of a timeline. It keeps the
//!   `dt`/`hour` partition columns so filters on them still prune.
//! - `processes`: one row per process instance, keyed by `(host, pid, start_ns)` so PID reuse
//!   never merges two processes, with its exec chain, exit, and its parent's image (lineage);
//!   `kernel_image` is the file the kernel executed last (`kernel_path` of the last exec).
//! - `execs`: exec rows with `program`, the program's name even when it ran as a busybox
//!   applet (`/bin/busybox wget`, or busybox re-executing itself through `/proc/self/exe`),
//!   and `exe_sha256`/`exe_hash` with a hash written late (an `exe_hash` row with the exec's
//!   host, pid, start_ns and ktime_ns) joined in. `events` leaves those rows out.
//! - `connections`: outbound connects and accepted connections.
//! - `file_writes`: every file change: creations, writes-opens, renames, deletes, mode and owner
//!   changes, with the kernel's path of an opened file beside the path given (`kernel_path`,
//!   `path_resolution`: see the `file` table).
//!
//! The SQL of each view is public so `\d` and the docs can show exactly what a view is.

use std::sync::Arc;

use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;

use crate::Result;

/// O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND: an open that can change the file.
pub const OPEN_WRITE_FLAGS: u64 = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000;

/// The views, by name, with their SQL.
pub fn definitions() -> Vec<(&'static str, String)> {
    vec![
        ("events", EVENTS.to_string()),
        ("processes", PROCESSES.to_string()),
        ("execs", EXECS.replace("{PROGRAM}", PROGRAM)),
        ("connections", CONNECTIONS.to_string()),
        (
            "file_writes",
            FILE_WRITES.replace("{OPEN_WRITE_FLAGS}", &OPEN_WRITE_FLAGS.to_string()),
        ),
    ]
}

/// The functions rules and queries use beside the engine's own (`cidr_match`, see
/// [`crate::sigma::cidr`]): every engine that runs a store's SQL needs them.
pub fn functions() -> Vec<Arc<ScalarUDF>> {
    vec![crate::sigma::cidr::udf()]
}

/// Registers every view on `ctx`, and the [`functions`].
pub async fn register(ctx: &SessionContext) -> Result<()> {
    for f in functions() {
        ctx.register_udf(f.as_ref().clone());
    }
    for (name, sql) in definitions() {
        ctx.sql(&format!("CREATE VIEW {name} AS {sql}")).await?;
    }
    Ok(())
}

const EVENTS: &str = "
SELECT time, ktime_ns, host, container_id, pid, tid, comm, start_ns,
       CASE WHEN event IN ('fork', 'exec', 'exit') THEN 'process' ELSE 'signal' END AS source,
       event,
       CASE event
         WHEN 'exec' THEN concat('exec ', filename, ' [', array_to_string(argv, ' '), ']',
                                 CASE WHEN argv_truncated THEN ' (argv truncated)' END,
                                 ' uid=', uid, CASE WHEN euid <> uid THEN concat(' euid=', euid) END)
         WHEN 'fork' THEN concat('fork from pid ', ppid)
         WHEN 'exit' THEN CASE WHEN exit_signal IS NOT NULL
                               THEN concat('killed by signal ', exit_signal,
                                           CASE WHEN core_dumped THEN ' (core dumped)' END)
                               ELSE concat('exit ', exit_code) END
         ELSE concat(event,
                     CASE WHEN detail IS NOT NULL THEN concat(' ', detail) END,
                     CASE WHEN uid IS NOT NULL THEN concat(' uid=', uid) END,
                     CASE WHEN euid IS NOT NULL THEN concat(' euid=', euid) END,
                     CASE WHEN target_pid IS NOT NULL THEN concat(' target pid ', target_pid) END,
                     CASE WHEN ret IS NOT NULL THEN concat(' ret=', ret) END)
       END AS summary,
       ret, dt, hour
FROM process
WHERE event <> 'exe_hash'
UNION ALL
SELECT time, ktime_ns, host, container_id, pid, tid, comm, CAST(NULL AS BIGINT UNSIGNED),
       'file', event,
       concat(event, ' ', coalesce(abs_path, path, concat('fd ', fd)),
              CASE WHEN kernel_path IS NOT NULL AND kernel_path <> coalesce(abs_path, path, '')
                   THEN concat(' (kernel: ', kernel_path, ')') END,
              CASE WHEN path2 IS NOT NULL THEN concat(' -> ', coalesce(abs_path2, path2)) END,
              CASE WHEN ret < 0 THEN concat(' (failed, errno ', -ret, ')') END),
       ret, dt, hour
FROM file
UNION ALL
SELECT time, ktime_ns, host, container_id, pid, tid, comm, CAST(NULL AS BIGINT UNSIGNED),
       'net', event,
       CASE WHEN event = 'tcp_state'
            THEN concat('tcp ', old_state, ' -> ', new_state, ' ', local_addr, ':', local_port,
                        ' <-> ', remote_addr, ':', remote_port)
            ELSE concat(event, ' ', coalesce(protocol, family, ''), ' ',
                        CASE WHEN unix_path IS NOT NULL THEN unix_path
                             WHEN remote_addr IS NOT NULL THEN concat(remote_addr, ':', remote_port)
                             ELSE concat(local_addr, ':', local_port) END,
                        CASE WHEN ret < 0 AND ret <> -115 THEN concat(' (failed, errno ', -ret, ')') END)
       END,
       ret, dt, hour
FROM net
UNION ALL
SELECT time, CAST(NULL AS BIGINT UNSIGNED), host, container_id, CAST(NULL AS INT),
       CAST(NULL AS INT), actor, CAST(NULL AS BIGINT UNSIGNED), 'action', action,
       concat(action, ' by ', actor, ': ', result,
              CASE WHEN reason IS NOT NULL THEN concat(' (', reason, ')') END,
              CASE WHEN error IS NOT NULL THEN concat(' error: ', error) END),
       CAST(NULL AS BIGINT), dt, hour
FROM action
UNION ALL
SELECT time, ktime_ns, host, CAST(NULL AS VARCHAR), CAST(NULL AS INT), CAST(NULL AS INT),
       CAST(NULL AS VARCHAR), CAST(NULL AS BIGINT UNSIGNED), 'gap', 'lost',
       CASE WHEN lost_table IS NOT NULL
            THEN concat(lost, ' ', lost_table, ' rows not sealed (', reason, ') since ',
                        CAST(since AS VARCHAR))
            WHEN cpu >= 0
            THEN concat(lost, ' records lost on CPU ', cpu, ' (', coalesce(reason, 'ring buffer full'),
                        ') since ', CAST(since AS VARCHAR))
            ELSE concat(lost, ' events skipped by the kernel (program recursion) since ',
                        CAST(since AS VARCHAR))
       END,
       CAST(NULL AS BIGINT), dt, hour
FROM gap
UNION ALL
SELECT coalesce(event_time, time), ktime_ns, host, container_id, pid, CAST(NULL AS INT), comm,
       CAST(NULL AS BIGINT UNSIGNED), 'alert', rule,
       concat('alert ', rule, ' (', severity, '): ', title, ': ', evidence, ' [alert ', alert_id, ']'),
       CAST(NULL AS BIGINT), dt, hour
FROM alert";

const PROCESSES: &str = "
WITH instance AS (
  SELECT host, pid, start_ns,
         max(container_id) AS container_id,
         -- The fork row names the real parent; later rows may name a reaper after reparenting.
         coalesce(min(CASE WHEN event = 'fork' THEN ppid END),
                  first_value(ppid ORDER BY ktime_ns)) AS ppid,
         coalesce(min(CASE WHEN event = 'fork' THEN parent_start_ns END),
                  first_value(parent_start_ns ORDER BY ktime_ns)) AS parent_start_ns,
         min(CASE WHEN event = 'fork' THEN time END) AS forked,
         min(CASE WHEN event = 'exec' THEN time END) AS first_exec,
         max(CASE WHEN event = 'exit' THEN time END) AS exited,
         count(CASE WHEN event = 'exec' THEN 1 END) AS execs,
         array_agg(filename ORDER BY ktime_ns) FILTER (WHERE event = 'exec') AS exec_chain,
         last_value(filename ORDER BY ktime_ns) FILTER (WHERE event = 'exec') AS image,
         last_value(kernel_path ORDER BY ktime_ns) FILTER (WHERE event = 'exec') AS kernel_image,
         last_value(argv ORDER BY ktime_ns) FILTER (WHERE event = 'exec') AS argv,
         last_value(uid ORDER BY ktime_ns) FILTER (WHERE event = 'exec') AS uid,
         last_value(euid ORDER BY ktime_ns) FILTER (WHERE event = 'exec') AS euid,
         max(exit_code) AS exit_code,
         max(exit_signal) AS exit_signal,
         last_value(comm ORDER BY ktime_ns) AS comm,
         min(time) AS first_seen,
         max(time) AS last_seen
  FROM process
  WHERE start_ns IS NOT NULL
  GROUP BY host, pid, start_ns
)
SELECT c.*, parent.comm AS parent_comm, parent.image AS parent_image, parent.argv AS parent_argv
FROM instance c
LEFT JOIN instance parent
  ON parent.host = c.host AND parent.pid = c.ppid AND parent.start_ns = c.parent_start_ns";

/// The program an exec row ran, from its `filename` and `argv`: the name even when it ran as a
/// busybox applet (`/bin/busybox wget`, or busybox re-executing itself through
/// `/proc/self/exe`, whose argv\[1\] names the applet). The `execs` view and the timeline's
/// process tree both use it.
pub const PROGRAM: &str = "regexp_replace(
         CASE WHEN regexp_replace(filename, '^.*/', '') IN ('busybox', 'exe') AND argv[1] IS NOT NULL
              THEN CASE WHEN regexp_replace(argv[1], '^.*/', '') = 'busybox'
                        THEN coalesce(argv[2], argv[1]) ELSE argv[1] END
              ELSE filename END,
         '^.*/', '')";

const EXECS: &str = "
SELECT e.* EXCLUDE (exe_sha256, exe_hash),
       {PROGRAM} AS program,
       coalesce(e.exe_sha256, late.exe_sha256) AS exe_sha256,
       coalesce(late.exe_hash, e.exe_hash) AS exe_hash
FROM process e
LEFT JOIN (SELECT host, pid, start_ns, ktime_ns, exe_sha256, exe_hash
           FROM process WHERE event = 'exe_hash') late
  ON late.host = e.host AND late.pid = e.pid AND late.start_ns = e.start_ns
 AND late.ktime_ns = e.ktime_ns
WHERE e.event = 'exec'";

const CONNECTIONS: &str = "
SELECT time, ktime_ns, host, container_id, pid, tid, comm, event AS direction, protocol, family,
       local_addr, local_port, remote_addr, remote_port, unix_path, ret,
       (ret >= 0 OR ret = -115) AS succeeded
FROM net
WHERE event IN ('connect', 'accept')";

const FILE_WRITES: &str = "
SELECT time, ktime_ns, host, container_id, pid, tid, comm, event, syscall,
       coalesce(abs_path, path) AS path, coalesce(abs_path2, path2) AS path2, flags, mode,
       owner_uid, owner_gid, fd, ret, ret >= 0 AS succeeded, kernel_path, path_resolution
FROM file
WHERE event <> 'open' OR (CAST(flags AS BIGINT) & {OPEN_WRITE_FLAGS}) <> 0";
