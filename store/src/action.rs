//! The responder's record: who ran a command, from where, and writing its row to the `action`
//! table.
//!
//! Every isolate, release, snapshot, export, hold and retention run is written here once its
//! outcome is known, by [`Store::record_action`], which tries again on failure. What to do
//! when a row still cannot be written (print it for recording by hand, exit non-zero) is the
//! caller's: this module never hides a failure and never undoes an action.

use std::path::Path;
use std::time::Duration;

use crate::schema::{ActionRow, action_batch};
use crate::{Partition, Result, SealedSegment, Store, Table};

/// The exact command line of this process, for the record.
pub fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// This machine's host name, as partitions (`host=`) and rows name it; `localhost` when it
/// has none.
pub fn local_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname(2) writes at most `buf.len()` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    (rc == 0)
        .then(|| std::str::from_utf8(&buf[..end]).ok().map(str::to_string))
        .flatten()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `loginuid` of a process whose session has none (daemons, containers, early boot).
const LOGINUID_UNSET: u32 = u32::MAX;

/// The actor of what a running recorder does by itself (an isolation by `--respond`, an
/// automatic baseline): the recorder and its pid.
pub fn recorder_actor() -> String {
    format!("quarry record (recorder, pid {})", std::process::id())
}

/// Who is running this command, for the record: the login user first (the kernel's audit
/// `loginuid`, set at login and kept across `sudo` and `su`, so it names the person behind a
/// shared root account), then `SUDO_USER` (an environment variable, so only what sudo, or the
/// caller, says), then the uid the command runs as. E.g.
/// `alice (login uid 1000); SUDO_USER alice; uid 0`.
pub fn actor() -> String {
    let loginuid = std::fs::read_to_string("/proc/self/loginuid")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    // SAFETY: getuid(2) cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    describe_actor(
        loginuid,
        std::env::var("SUDO_USER").ok().as_deref(),
        uid,
        &user_name,
    )
}

fn describe_actor(
    loginuid: Option<u32>,
    sudo_user: Option<&str>,
    uid: u32,
    name_of: &dyn Fn(u32) -> Option<String>,
) -> String {
    let mut out = match loginuid {
        Some(LOGINUID_UNSET) => "login uid unset".to_string(),
        Some(l) => match name_of(l) {
            Some(name) => format!("{name} (login uid {l})"),
            None => format!("login uid {l}"),
        },
        None => "login uid unknown".to_string(),
    };
    if let Some(s) = sudo_user.filter(|s| !s.is_empty()) {
        out.push_str(&format!("; SUDO_USER {s}"));
    }
    out.push_str(&format!("; uid {uid}"));
    out
}

/// The name of `uid` in /etc/passwd (users only a directory service knows stay numbers).
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

/// Pauses before the second and third attempt: long enough for a transient failure (a lock
/// held by a slow writer, space freed by retention) to pass, short enough for a responder.
pub const RETRY_AFTER: [Duration; 2] = [Duration::from_millis(200), Duration::from_secs(1)];

/// What an action came to, for its row.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// ok | unchanged | error
    pub result: &'static str,
    /// What failed, when it did.
    pub error: Option<String>,
    /// What was done (JSON), when there is more to say than `result`.
    pub detail: Option<serde_json::Value>,
}

impl Outcome {
    /// `ok` with the detail of what was done, or `error` with what failed.
    pub fn of<T, E: std::fmt::Display>(
        result: &std::result::Result<T, E>,
        detail: impl FnOnce(&T) -> serde_json::Value,
    ) -> Outcome {
        match result {
            Ok(r) => Outcome {
                result: "ok",
                error: None,
                detail: Some(detail(r)),
            },
            Err(e) => Outcome {
                result: "error",
                error: Some(e.to_string()),
                detail: None,
            },
        }
    }
}

impl ActionRow {
    /// The row of `action` taken now by `actor`, on a container when one is concerned, with
    /// this process's command line.
    pub fn new(
        action: &str,
        actor: String,
        container: Option<(&str, Option<&str>)>,
        reason: Option<&str>,
        outcome: Outcome,
    ) -> ActionRow {
        ActionRow {
            time: chrono::Utc::now(),
            action: action.into(),
            actor,
            container_id: container.map(|c| c.0.into()),
            container_name: container.and_then(|c| c.1.map(Into::into)),
            reason: reason.map(Into::into),
            detail: outcome.detail.map(|d| d.to_string()),
            result: outcome.result.into(),
            error: outcome.error,
            command: command_line(),
        }
    }

    /// The row of `action` taken now by whoever runs this command ([`actor`]).
    pub fn by_user(
        action: &str,
        container: Option<(&str, Option<&str>)>,
        reason: Option<&str>,
        outcome: Outcome,
    ) -> ActionRow {
        ActionRow::new(action, actor(), container, reason, outcome)
    }
}

/// What to say when `row` could not be sealed into the store at `root` (`error`, after every
/// attempt): that the action is not on the record, why, and the row in full as JSON, to be
/// recorded by hand. The caller prints or logs it; the action itself stands.
pub fn unrecorded(root: &Path, row: &ActionRow, error: &crate::StoreError) -> String {
    let row_json = serde_json::json!({
        "time": row.time.to_rfc3339(), "action": row.action, "actor": row.actor,
        "container_id": row.container_id, "container_name": row.container_name,
        "reason": row.reason, "detail": row.detail, "result": row.result, "error": row.error,
        "command": row.command,
    });
    format!(
        "the {} (result: {}) is NOT on the record: writing its row to the action table of {} \
         failed {} times: sealing the action into the store {}: {}\nrecord it by hand; the \
         row: {row_json}",
        row.action,
        row.result,
        root.display(),
        RETRY_AFTER.len() + 1,
        root.display(),
        crate::human::with_causes(error)
    )
}

impl Store {
    /// Seals one action row into the store at `root` (created if missing), on this host's
    /// partition, trying again after each of [`RETRY_AFTER`]; the last error when every
    /// attempt failed.
    pub fn record_action(root: &Path, row: &ActionRow) -> Result<SealedSegment> {
        let attempt = || {
            let store = Store::create(root)?;
            let host = local_hostname();
            let partition = Partition::for_time(Table::Action, row.time, &host);
            store.seal(
                &partition,
                &action_batch(&host, std::slice::from_ref(row)),
                std::process::id(),
                0,
            )
        };
        let mut result = attempt();
        for pause in RETRY_AFTER {
            if result.is_ok() {
                break;
            }
            std::thread::sleep(pause);
            result = attempt();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_user_comes_first_and_sudo_user_second() {
        let names = |uid| (uid == 1000).then(|| "alice".to_string());
        assert_eq!(
            describe_actor(Some(1000), Some("bob"), 0, &names),
            "alice (login uid 1000); SUDO_USER bob; uid 0"
        );
        assert_eq!(
            describe_actor(Some(1001), None, 0, &names),
            "login uid 1001; uid 0"
        );
        assert_eq!(
            describe_actor(Some(LOGINUID_UNSET), Some(""), 0, &names),
            "login uid unset; uid 0"
        );
        assert_eq!(
            describe_actor(None, Some("carol"), 5, &names),
            "login uid unknown; SUDO_USER carol; uid 5"
        );
    }

    #[test]
    fn root_has_a_name() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
    }

    #[test]
    fn an_action_row_lands_in_its_partition() {
        let dir = tempfile::tempdir().unwrap();
        let row = ActionRow {
            time: chrono::Utc::now(),
            action: "isolate".into(),
            actor: actor(),
            container_id: Some("c1".into()),
            container_name: None,
            reason: None,
            detail: None,
            result: "ok".into(),
            error: None,
            command: command_line(),
        };
        Store::record_action(dir.path(), &row).unwrap();
        let store = Store::at(dir.path());
        let rows: usize = store
            .read_table(Table::Action)
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 1);
        assert!(!local_hostname().is_empty());
    }
}
