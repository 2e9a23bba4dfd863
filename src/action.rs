//! Writing responder actions to the store's `action` table, so every isolate, release,
//! snapshot, export, hold and retention run is on the record, and who ran it.
//!
//! A row is written once the action's outcome is known. Writing it can fail (a full disk, a
//! store someone tampered with) after the action itself succeeded: then the row is tried again,
//! and if it still cannot be written it is printed on stderr in full, to be recorded by hand,
//! and the command exits with [`crate::exit::UNRECORDED`], so neither the action nor the
//! missing record is hidden. Recording never undoes or hides the action.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use quarry_store::schema::{ActionRow, action_batch};
use quarry_store::{Partition, Store, Table};

/// The exact command line, for the record.
pub fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// `loginuid` of a process whose session has none (daemons, containers, early boot).
const LOGINUID_UNSET: u32 = u32::MAX;

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

/// What happened, for the record.
pub struct Outcome<'a> {
    /// ok | unchanged | error
    pub result: &'a str,
    pub error: Option<String>,
    pub detail: Option<serde_json::Value>,
}

/// Whether the action's row made it into the store.
#[must_use = "the exit code must say when an action is not on the record"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Yes,
    /// It could not be written; the row was printed on stderr.
    No,
}

impl Recorded {
    /// The exit code of a command whose action succeeded.
    pub fn exit_code(self) -> u8 {
        match self {
            Recorded::Yes => crate::exit::OK,
            Recorded::No => crate::exit::UNRECORDED,
        }
    }
}

/// Records `action` on a container by the invoking user, now, with the exact command line.
pub fn record_on(
    store: &Path,
    action: &str,
    container_id: &str,
    container_name: Option<&str>,
    reason: Option<&str>,
    outcome: Outcome<'_>,
) -> Recorded {
    record_maybe_on(
        store,
        action,
        Some((container_id, container_name)),
        reason,
        outcome,
    )
}

/// Records `action` by the invoking user, now, on a container when one is concerned (`retain`
/// concerns the whole store; a hold may cover every container).
pub fn record_maybe_on(
    store: &Path,
    action: &str,
    container: Option<(&str, Option<&str>)>,
    reason: Option<&str>,
    outcome: Outcome<'_>,
) -> Recorded {
    record(
        store,
        ActionRow {
            time: chrono::Utc::now(),
            action: action.into(),
            actor: actor(),
            container_id: container.map(|c| c.0.into()),
            container_name: container.and_then(|c| c.1.map(Into::into)),
            reason: reason.map(Into::into),
            detail: outcome.detail.map(|d| d.to_string()),
            result: outcome.result.into(),
            error: outcome.error,
            command: command_line(),
        },
    )
}

/// Pauses before the second and third attempt: long enough for a transient failure (a lock
/// held by a slow writer, space freed by retention) to pass, short enough for a responder.
const RETRY_AFTER: [Duration; 2] = [Duration::from_millis(200), Duration::from_secs(1)];

/// Seals one action row into the store at `store` (created if missing), trying again on
/// failure; if it cannot, prints the row on stderr so it can be recorded by hand.
pub fn record(store: &Path, row: ActionRow) -> Recorded {
    let mut last = None;
    for pause in std::iter::once(None).chain(RETRY_AFTER.into_iter().map(Some)) {
        if let Some(p) = pause {
            std::thread::sleep(p);
        }
        match try_record(store, &row) {
            Ok(()) => return Recorded::Yes,
            Err(e) => last = Some(e),
        }
    }
    let e = last.expect("at least one attempt was made");
    let row_json = serde_json::json!({
        "time": row.time.to_rfc3339(), "action": row.action, "actor": row.actor,
        "container_id": row.container_id, "container_name": row.container_name,
        "reason": row.reason, "detail": row.detail, "result": row.result, "error": row.error,
        "command": row.command,
    });
    eprintln!(
        "error: the {} (result: {}) is NOT on the record: writing its row to the action table \
         of {} failed {} times: {e:#}\nrecord it by hand; the row: {row_json}",
        row.action,
        row.result,
        store.display(),
        RETRY_AFTER.len() + 1
    );
    Recorded::No
}

fn try_record(store: &Path, row: &ActionRow) -> anyhow::Result<()> {
    let store = Store::create(store)
        .with_context(|| format!("opening the store {} to record the action", store.display()))?;
    let host = quarry_recorder::local_hostname();
    let partition = Partition::for_time(Table::Action, row.time, &host);
    store
        .seal(
            &partition,
            &action_batch(&host, std::slice::from_ref(row)),
            std::process::id(),
            0,
        )
        .context("sealing the action into the store")?;
    Ok(())
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
}
