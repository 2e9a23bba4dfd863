//! The field mapping: which Sigma field is which expression over which view.
//!
//! This table is the one place a Sigma field name becomes SQL. Field names from a rule are
//! looked up here and never written into a statement themselves, so a rule cannot name a
//! column, a function or anything else of its own.
//!
//! | Sigma field | process_creation (`execs e`) | file_event / file_access (`f`) | network_connection (`connections n`) |
//! |---|---|---|---|
//! | `Image` | `coalesce(e.exe_path, e.filename)`: the executed path made absolute | the image the process last executed before the row ([`PROCESS_SPAN`]) | as for files |
//! | `CommandLine` | `argv` joined by spaces | the argv of that exec | as for files |
//! | `ParentImage` | the parent's last exec (`pid = ppid`, `start_ns = parent_start_ns`) | — | — |
//! | `ParentCommandLine` | the parent's argv, joined | — | — |
//! | `CurrentDirectory` | `e.cwd` | — | — |
//! | `User` | `root` for uid 0, else the uid as text | — | — |
//! | `ProcessId` | `e.pid` | `f.pid` | `n.pid` |
//! | `ParentProcessId` | `e.ppid` | — | — |
//! | `TargetFilename` | — | the path changed or opened (for rename, link and symlink the new name) | — |
//! | `DestinationIp` / `DestinationPort` | — | — | `n.remote_addr` / `n.remote_port` |
//! | `SourceIp` / `SourcePort` | — | — | `n.local_addr` / `n.local_port` |
//! | `Initiated` | — | — | `'true'`: an outbound connect, `'false'`: an accepted connection |
//!
//! `User` is `root` or a number because the recorder keeps uids, not names: a name would have
//! to come from the container's own `/etc/passwd`, which the container controls. Fields the
//! recorder has no data for are refused rather than mapped to something that never matches:
//! `DestinationHostname` (addresses are recorded, not the names looked up), hashes, Windows
//! fields. A rule that cannot match would look like coverage and be none.

use super::model::Category;

/// What kind of value a field holds, which decides the comparisons it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text: wildcards, contains/startswith/endswith, re.
    Text,
    /// An IP address as text: also `cidr`.
    Ip,
    /// A number: equality and lt/lte/gt/gte; text modifiers compare its decimal text.
    Number,
    /// `Initiated`: the direction of a connection, `'true'` or `'false'`.
    Initiated,
}

/// One mapped field: its SQL expression and kind, and whether it needs the parent or
/// process-image join.
#[derive(Debug, Clone, Copy)]
pub struct Mapped {
    pub sql: &'static str,
    pub kind: Kind,
    pub needs: Join,
}

/// A join a field's expression reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    None,
    /// `pp`: the parent process's last exec (process_creation).
    Parent,
    /// `img`: the image a process ran when a file or network row was written.
    Image,
}

/// The process-image span join of file and network rows: each fork, exec or exit of a pid
/// starts a span that lasts until the next one; exec spans carry the image. A row falls in
/// exactly one span of its pid, so pid reuse cannot lend it an earlier process's image (a
/// fork starts a span with no image).
pub const PROCESS_SPAN: &str = "SELECT host, pid, ktime_ns AS span_start,
         lead(ktime_ns) OVER (PARTITION BY host, pid ORDER BY ktime_ns) AS span_end,
         CASE WHEN event = 'exec' THEN coalesce(exe_path, filename) END AS image,
         CASE WHEN event = 'exec' THEN array_to_string(argv, ' ') END AS command_line
  FROM process
  WHERE event IN ('fork', 'exec', 'exit')";

/// The parent join of process_creation: each process instance's last exec.
pub const PARENT: &str = "SELECT host, pid, start_ns,
         last_value(coalesce(exe_path, filename) ORDER BY ktime_ns) AS image,
         last_value(array_to_string(argv, ' ') ORDER BY ktime_ns) AS command_line
  FROM execs
  WHERE start_ns IS NOT NULL
  GROUP BY host, pid, start_ns";

/// Why a field is refused when it is not mapped for the rule's category.
pub enum Unmapped {
    /// Known to Sigma, but the recorder has no such data.
    NoData(&'static str),
    /// Not a field of this category here.
    Unknown,
}

/// Maps `field` for `category`.
pub fn map(category: Category, field: &str) -> Result<Mapped, Unmapped> {
    use Category::*;
    use Join::{Image as I, None as N, Parent as P};
    use Kind::*;
    let m = |sql, kind, needs| Ok(Mapped { sql, kind, needs });
    match (category, field) {
        (ProcessCreation, "Image") => m("coalesce(e.exe_path, e.filename)", Text, N),
        (ProcessCreation, "CommandLine") => m("array_to_string(e.argv, ' ')", Text, N),
        (ProcessCreation, "ParentImage") => m("pp.image", Text, P),
        (ProcessCreation, "ParentCommandLine") => m("pp.command_line", Text, P),
        (ProcessCreation, "CurrentDirectory") => m("e.cwd", Text, N),
        (ProcessCreation, "User") => m(
            "CASE WHEN e.uid = 0 THEN 'root' ELSE CAST(e.uid AS VARCHAR) END",
            Text,
            N,
        ),
        (ProcessCreation, "ProcessId") => m("e.pid", Number, N),
        (ProcessCreation, "ParentProcessId") => m("e.ppid", Number, N),
        (FileEvent | FileAccess, "TargetFilename") => m("f.target", Text, N),
        (FileEvent | FileAccess, "ProcessId") => m("f.pid", Number, N),
        (NetworkConnection, "DestinationIp") => m("n.remote_addr", Ip, N),
        (NetworkConnection, "DestinationPort") => m("n.remote_port", Number, N),
        (NetworkConnection, "SourceIp") => m("n.local_addr", Ip, N),
        (NetworkConnection, "SourcePort") => m("n.local_port", Number, N),
        (NetworkConnection, "Initiated") => m("n.direction", Initiated, N),
        (NetworkConnection, "ProcessId") => m("n.pid", Number, N),
        (FileEvent | FileAccess | NetworkConnection, "Image") => m("img.image", Text, I),
        (FileEvent | FileAccess | NetworkConnection, "CommandLine") => {
            m("img.command_line", Text, I)
        }
        (_, "DestinationHostname" | "SourceHostname") => Err(Unmapped::NoData(
            "the recorder keeps addresses, not the host names that were looked up",
        )),
        (_, "Hashes" | "md5" | "sha1" | "sha256" | "Imphash") => {
            Err(Unmapped::NoData("the recorder does not hash executables"))
        }
        (_, "User" | "LogonId" | "ParentUser") => Err(Unmapped::NoData(
            "file and network rows carry no credentials; only process_creation has User",
        )),
        (_, "ParentImage" | "ParentCommandLine" | "CurrentDirectory" | "ParentProcessId") => Err(
            Unmapped::NoData("only process_creation rules see a process's parent and directory"),
        ),
        _ => Err(Unmapped::Unknown),
    }
}

/// The fields [`map`] knows for `category`, for the refusal of an unknown one.
pub fn known(category: Category) -> &'static [&'static str] {
    match category {
        Category::ProcessCreation => &[
            "Image",
            "CommandLine",
            "ParentImage",
            "ParentCommandLine",
            "CurrentDirectory",
            "User",
            "ProcessId",
            "ParentProcessId",
        ],
        Category::FileEvent | Category::FileAccess => {
            &["TargetFilename", "Image", "CommandLine", "ProcessId"]
        }
        Category::NetworkConnection => &[
            "DestinationIp",
            "DestinationPort",
            "SourceIp",
            "SourcePort",
            "Initiated",
            "Image",
            "CommandLine",
            "ProcessId",
        ],
    }
}
