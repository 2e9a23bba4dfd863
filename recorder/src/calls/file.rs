//! The file family: opens, creates, unlinks, renames, links, symlinks, truncation, mode and
//! ownership changes, as `file` rows with the path as given and its absolute form.

use quarry_recorder_common::nr;
use quarry_store::schema::FileRow;

use super::{Call, CallRow, Calls, ProcView, raw};

const AT_REMOVEDIR: u64 = 0x200;
const O_CREAT_WRONLY_TRUNC: u64 = 0o100 | 0o1 | 0o1000;

/// A file syscall as its row; None for a syscall of another family.
pub(super) fn decode<P: ProcView>(calls: &mut Calls<P>, c: &Call) -> Option<CallRow> {
    let ev = c.ev;
    let a = &ev.args;
    let row = match ev.nr {
        nr::OPEN => {
            let mut f = row(calls, c, "open", Some((None, c.p1.clone())), None);
            (f.flags, f.mode) = (Some(a[1]), Some(a[2] as u32));
            CallRow::File(f)
        }
        nr::OPENAT => {
            let mut f = row(calls, c, "open", Some((c.dirfd(0), c.p1.clone())), None);
            (f.flags, f.mode) = (Some(a[2]), Some(a[3] as u32));
            CallRow::File(f)
        }
        nr::OPENAT2 => {
            let mut f = row(calls, c, "open", Some((c.dirfd(0), c.p1.clone())), None);
            let how = raw(&ev.str2, ev.str2_len);
            if how.len() >= 16 {
                f.flags = Some(u64::from_le_bytes(how[0..8].try_into().ok()?));
                f.mode = Some(u64::from_le_bytes(how[8..16].try_into().ok()?) as u32);
            }
            CallRow::File(f)
        }
        nr::CREAT => {
            let mut f = row(calls, c, "create", Some((None, c.p1.clone())), None);
            (f.flags, f.mode) = (Some(O_CREAT_WRONLY_TRUNC), Some(a[1] as u32));
            CallRow::File(f)
        }
        nr::UNLINK => CallRow::File(row(calls, c, "unlink", Some((None, c.p1.clone())), None)),
        nr::UNLINKAT => {
            let event = if a[2] & AT_REMOVEDIR != 0 {
                "rmdir"
            } else {
                "unlink"
            };
            let mut f = row(calls, c, event, Some((c.dirfd(0), c.p1.clone())), None);
            f.flags = Some(a[2]);
            CallRow::File(f)
        }
        nr::RMDIR => CallRow::File(row(calls, c, "rmdir", Some((None, c.p1.clone())), None)),
        nr::RENAME => CallRow::File(row(
            calls,
            c,
            "rename",
            Some((None, c.p1.clone())),
            Some((None, c.p2.clone())),
        )),
        nr::RENAMEAT | nr::RENAMEAT2 => {
            let mut f = row(
                calls,
                c,
                "rename",
                Some((c.dirfd(0), c.p1.clone())),
                Some((c.dirfd(2), c.p2.clone())),
            );
            if ev.nr == nr::RENAMEAT2 {
                f.flags = Some(a[4]);
            }
            CallRow::File(f)
        }
        nr::CHMOD => {
            let mut f = row(calls, c, "chmod", Some((None, c.p1.clone())), None);
            f.mode = Some(a[1] as u32);
            CallRow::File(f)
        }
        nr::FCHMODAT | nr::FCHMODAT2 => {
            let mut f = row(calls, c, "chmod", Some((c.dirfd(0), c.p1.clone())), None);
            f.mode = Some(a[2] as u32);
            CallRow::File(f)
        }
        nr::FCHMOD => {
            let mut f = row(calls, c, "chmod", None, None);
            (f.fd, f.mode) = (Some(a[0] as i32), Some(a[1] as u32));
            f.abs_path = calls.proc.fd_path(c.pid, a[0] as i32);
            CallRow::File(f)
        }
        nr::CHOWN | nr::LCHOWN => {
            let mut f = row(calls, c, "chown", Some((None, c.p1.clone())), None);
            (f.owner_uid, f.owner_gid) = (Some(a[1] as i32 as i64), Some(a[2] as i32 as i64));
            CallRow::File(f)
        }
        nr::FCHOWNAT => {
            let mut f = row(calls, c, "chown", Some((c.dirfd(0), c.p1.clone())), None);
            (f.owner_uid, f.owner_gid) = (Some(a[2] as i32 as i64), Some(a[3] as i32 as i64));
            f.flags = Some(a[4]);
            CallRow::File(f)
        }
        nr::FCHOWN => {
            let mut f = row(calls, c, "chown", None, None);
            f.fd = Some(a[0] as i32);
            (f.owner_uid, f.owner_gid) = (Some(a[1] as i32 as i64), Some(a[2] as i32 as i64));
            f.abs_path = calls.proc.fd_path(c.pid, a[0] as i32);
            CallRow::File(f)
        }
        nr::MKDIR => {
            let mut f = row(calls, c, "mkdir", Some((None, c.p1.clone())), None);
            f.mode = Some(a[1] as u32);
            CallRow::File(f)
        }
        nr::MKDIRAT => {
            let mut f = row(calls, c, "mkdir", Some((c.dirfd(0), c.p1.clone())), None);
            f.mode = Some(a[2] as u32);
            CallRow::File(f)
        }
        nr::LINK => CallRow::File(row(
            calls,
            c,
            "link",
            Some((None, c.p1.clone())),
            Some((None, c.p2.clone())),
        )),
        nr::LINKAT => {
            let mut f = row(
                calls,
                c,
                "link",
                Some((c.dirfd(0), c.p1.clone())),
                Some((c.dirfd(2), c.p2.clone())),
            );
            f.flags = Some(a[4]);
            CallRow::File(f)
        }
        // A symlink's target is kept as written: it is resolved when followed, not now.
        nr::SYMLINK | nr::SYMLINKAT => {
            let link_dirfd = if ev.nr == nr::SYMLINKAT {
                c.dirfd(1)
            } else {
                None
            };
            let mut f = row(calls, c, "symlink", None, Some((link_dirfd, c.p2.clone())));
            f.path = c.p1.clone();
            f.resolution = "none";
            CallRow::File(f)
        }
        nr::TRUNCATE => CallRow::File(row(calls, c, "truncate", Some((None, c.p1.clone())), None)),
        nr::FTRUNCATE => {
            let mut f = row(calls, c, "truncate", None, None);
            f.fd = Some(a[0] as i32);
            f.abs_path = calls.proc.fd_path(c.pid, a[0] as i32);
            CallRow::File(f)
        }
        _ => return None,
    };
    Some(row)
}

/// A file row of `event` with its first and second path (each with the dirfd it is relative
/// to) resolved; the caller fills the syscall's own columns.
fn row<P: ProcView>(
    calls: &mut Calls<P>,
    c: &Call,
    event: &'static str,
    path: Option<(Option<i32>, Option<String>)>,
    path2: Option<(Option<i32>, Option<String>)>,
) -> FileRow {
    let (path, abs_path, resolution) = match path {
        Some((fd, Some(p))) => {
            let (abs, how) = calls.resolve(c.pid, fd, &p);
            (Some(p), abs, how)
        }
        Some((_, None)) => (None, None, "unreadable"),
        None => (None, None, "none"),
    };
    let (path2, abs_path2) = match path2 {
        Some((fd, Some(p))) => {
            let (abs, _) = calls.resolve(c.pid, fd, &p);
            (Some(p), abs)
        }
        _ => (None, None),
    };
    FileRow {
        id: c.id.clone(),
        event,
        syscall: c.syscall,
        path,
        abs_path,
        resolution,
        path2,
        abs_path2,
        flags: None,
        mode: None,
        owner_uid: None,
        owner_gid: None,
        fd: None,
        ret: None,
        kernel_path: None,
        path_resolution: None,
    }
}
