//! The running recorder's advertisement: which store it writes and which process it is, in
//! `/run/quarry/recorder.json`, so commands given no store write their actions (and read) where
//! the recorder writes.
//!
//! The file is written atomically when recording starts (a temporary file renamed into place)
//! and removed when the recorder exits, but only while it still names this process (a second
//! recorder may have advertised itself since). A recorder killed outright leaves it behind,
//! so a reader believes it only when:
//! - it is a regular file (not a symlink) owned by root or the reader, writable by no one else;
//! - its pid runs, with the start time the recorder wrote (a reused pid has another);
//! - that process's executable (`/proc/<pid>/exe`, the file itself, not a name the process
//!   can set such as `comm`) is the file the recorder ran from.
//!
//! Otherwise [`read`] says why it ignored the file. This module only publishes and checks;
//! choosing a store is the command line's.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the recorder advertises itself.
pub const DEFAULT_PATH: &str = "/run/quarry/recorder.json";

/// The advertisement's path: `$QUARRY_RECORDER_ADVERT` when set (tests, a second recorder on
/// one host), else [`DEFAULT_PATH`].
pub fn path() -> PathBuf {
    std::env::var_os("QUARRY_RECORDER_ADVERT")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// What a recorder says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advert {
    /// The store it writes.
    pub store: PathBuf,
    pub pid: u32,
    /// The process's start time in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
    /// Device and inode of the executable it runs.
    pub exe_dev: u64,
    pub exe_ino: u64,
    /// When it started recording, RFC 3339.
    pub started: String,
}

/// Why an advertisement could not be published.
#[derive(Debug, thiserror::Error)]
pub enum AdvertError {
    /// Reading this process's own identity, or writing the file, failed.
    #[error("cannot advertise the recorder in {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A published advertisement; dropping it removes the file if it still names this process.
#[derive(Debug)]
pub struct Published {
    path: PathBuf,
    pid: u32,
}

impl Drop for Published {
    fn drop(&mut self) {
        if let Ok(text) = fs::read_to_string(&self.path)
            && serde_json::from_str::<Advert>(&text).is_ok_and(|a| a.pid == self.pid)
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Advertises this process as the recorder writing `store`, at `path`.
pub fn publish(path: &Path, store: &Path) -> Result<Published, AdvertError> {
    let io_err = |source| AdvertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let pid = std::process::id();
    let exe = fs::metadata("/proc/self/exe").map_err(io_err)?;
    let advert = Advert {
        store: std::path::absolute(store).map_err(io_err)?,
        pid,
        start_ticks: start_ticks(pid).map_err(io_err)?,
        exe_dev: exe.dev(),
        exe_ino: exe.ino(),
        started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir).map_err(io_err)?;
    }
    let tmp = path.with_extension(format!("json.tmp-{pid}"));
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        let text = serde_json::to_string_pretty(&advert).map_err(io::Error::other)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    Ok(Published {
        path: path.to_path_buf(),
        pid,
    })
}

/// What the advertisement at a path says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// No advertisement: no recorder runs (or it was never advertised).
    None,
    /// A running recorder writes this store.
    Live(Advert),
    /// There is a file, but it does not describe a running recorder; the reason says why.
    Ignored(String),
}

/// Reads and checks the advertisement at `path` (see the module's rules).
pub fn read(path: &Path) -> Lookup {
    let ignored = |why: String| Lookup::Ignored(format!("ignoring {}: {why}", path.display()));
    let mut file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::None,
        Err(e) => return ignored(format!("cannot open it ({e}); symlinks are not followed")),
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return ignored(format!("cannot stat it ({e})")),
    };
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    if !meta.is_file() || (meta.uid() != 0 && meta.uid() != euid) {
        return ignored(format!(
            "not a regular file owned by root (uid {})",
            meta.uid()
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return ignored("others may write it".into());
    }
    let mut text = String::new();
    if let Err(e) = Read::by_ref(&mut file)
        .take(64 << 10)
        .read_to_string(&mut text)
    {
        return ignored(format!("cannot read it ({e})"));
    }
    let advert: Advert = match serde_json::from_str(&text) {
        Ok(a) => a,
        Err(e) => return ignored(format!("not a recorder advertisement ({e})")),
    };
    match start_ticks(advert.pid) {
        Ok(t) if t == advert.start_ticks => {}
        Ok(_) => return ignored(format!("pid {} is another process now", advert.pid)),
        Err(_) => return ignored(format!("pid {} is gone", advert.pid)),
    }
    match fs::metadata(format!("/proc/{}/exe", advert.pid)) {
        Ok(m) if (m.dev(), m.ino()) == (advert.exe_dev, advert.exe_ino) => {}
        Ok(_) => {
            return ignored(format!(
                "pid {} is not a quarry recorder (it runs another executable)",
                advert.pid
            ));
        }
        // Only the recorder's user may look at its executable; the start time already ties
        // the pid to the process that wrote the file.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
        Err(e) => return ignored(format!("pid {}: {e}", advert.pid)),
    }
    Lookup::Live(advert)
}

/// A process's start time in clock ticks after boot (see `quarry_containers::runtime`).
fn start_ticks(pid: u32) -> io::Result<u64> {
    i32::try_from(pid)
        .ok()
        .and_then(|pid| quarry_containers::runtime::start_ticks(Path::new("/proc"), pid))
        .ok_or_else(|| io::Error::other(format!("no start time for pid {pid} in /proc")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_is_live_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/recorder.json");
        let published = publish(&path, Path::new("/srv/store")).unwrap();
        match read(&path) {
            Lookup::Live(a) => {
                assert_eq!(a.store, Path::new("/srv/store"));
                assert_eq!(a.pid, std::process::id());
            }
            other => panic!("{other:?}"),
        }
        drop(published);
        assert!(!path.exists());
        assert_eq!(read(&path), Lookup::None);
    }

    fn write(path: &Path, advert: &Advert) {
        fs::write(path, serde_json::to_string(advert).unwrap()).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    }

    fn ours() -> Advert {
        let exe = fs::metadata("/proc/self/exe").unwrap();
        Advert {
            store: "/s".into(),
            pid: std::process::id(),
            start_ticks: start_ticks(std::process::id()).unwrap(),
            exe_dev: exe.dev(),
            exe_ino: exe.ino(),
            started: String::new(),
        }
    }

    #[test]
    fn stale_or_foreign_adverts_are_ignored_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recorder.json");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        write(
            &path,
            &Advert {
                pid: gone,
                ..ours()
            },
        );
        let Lookup::Ignored(why) = read(&path) else {
            panic!("a dead pid is not live")
        };
        assert!(
            why.contains("is gone") || why.contains("another process"),
            "{why}"
        );

        write(
            &path,
            &Advert {
                start_ticks: 1,
                ..ours()
            },
        );
        let Lookup::Ignored(why) = read(&path) else {
            panic!("a reused pid is not live")
        };
        assert!(why.contains("another process"), "{why}");

        write(
            &path,
            &Advert {
                exe_ino: 1,
                ..ours()
            },
        );
        let Lookup::Ignored(why) = read(&path) else {
            panic!("another executable is not a recorder")
        };
        assert!(why.contains("not a quarry recorder"), "{why}");

        write(&path, &ours());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        let Lookup::Ignored(why) = read(&path) else {
            panic!("a world-writable advert is not believed")
        };
        assert!(why.contains("others may write"), "{why}");

        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(read(&link), Lookup::Ignored(_)));
    }
}
