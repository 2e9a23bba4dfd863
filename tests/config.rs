//! Where commands find their store: the configuration file (`--config`, `$QUARRY_CONFIG`) and
//! the running recorder's advertisement (`/run/quarry/recorder.json`, here a per-test path
//! through `$QUARRY_RECORDER_ADVERT` so tests running side by side do not read each other's).

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::containers::RuncContainer;
use common::*;

/// A command that sees only the configuration and advertisement this test gives it.
fn cmd(config: &Path, advert: &Path) -> Command {
    let mut c = quarry();
    c.env_remove("QUARRY_STORE")
        .env("QUARRY_CONFIG", config)
        .env("QUARRY_RECORDER_ADVERT", advert);
    c
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Releases on drop, so a failing test leaves no quarantine behind.
struct Released<'a>(&'a str, &'a Path);
impl Drop for Released<'_> {
    fn drop(&mut self) {
        let _ = quarry()
            .args(["release", self.0, "--store"])
            .arg(self.1)
            .output();
        let _ = quarry_isolate::unload_if_idle();
    }
}

#[test]
fn an_action_without_store_lands_in_the_recorders_store() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let advert = dir.path().join("run/recorder.json");
    let config = dir.path().join("quarry.toml");
    std::fs::write(&config, "# no store here\n").unwrap();
    let id = format!("d24-advert-{}", std::process::id());
    let c = RuncContainer::start(&id);

    let mut record = cmd(&config, &advert);
    record
        .args(["record", "--quiet", "--seal-interval", "1s", "--store"])
        .arg(&store);
    let recorder = RecorderProcess::spawn(record);
    let text = std::fs::read_to_string(&advert).expect("the recorder advertises itself");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["pid"], recorder.pid());
    assert_eq!(v["store"], store.to_str().unwrap());
    // Something for the recorder to attribute to the container, so its `container` table
    // knows it.
    assert_eq!(c.exec(&["sh", "-c", "true"]), 0);

    let _released = Released(&id, &store);
    let out = cmd(&config, &advert)
        .args(["isolate", &id, "--reason", "d24: advert test"])
        .output()
        .unwrap();
    ok(out);
    let out = cmd(&config, &advert)
        .args(["release", &id, "--reason", "d24: advert test"])
        .output()
        .unwrap();
    ok(out);

    let out = recorder.stop_with(nix::sys::signal::Signal::SIGINT);
    assert!(out.status.success(), "{out:?}");
    assert!(!advert.exists(), "a clean exit withdraws the advertisement");
    assert!(
        !Path::new("/tmp/quarry-test-unused").join("action").exists(),
        "nothing went elsewhere"
    );

    let out = cmd(&config, &advert)
        .args(["timeline", &id, "--format", "json", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let t: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    // The responder's actions, in order (the recorder's own automatic baseline of the
    // container may be among the actions too: its actor is the recorder).
    let actions: Vec<&str> = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == "action")
        .filter(|e| !e["comm"].as_str().unwrap_or("").contains("(recorder,"))
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["isolate", "release"], "{t}");
}

#[test]
fn the_config_files_store_and_settings_are_used_and_flags_override_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("configured-store");
    let config = dir.path().join("quarry.toml");
    let advert = dir.path().join("no-recorder.json");
    std::fs::write(
        &config,
        format!(
            "store = {:?}\n[retention]\nmax_age = \"30d\"\n",
            store.to_str().unwrap()
        ),
    )
    .unwrap();

    let out = cmd(&config, &advert)
        .args(["hold", "--since", "1h", "--reason", "d24: config test"])
        .output()
        .unwrap();
    ok(out);
    let out = cmd(&config, &advert)
        .args(["hold", "--list", "--format", "json"])
        .output()
        .unwrap();
    let holds: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(holds.as_array().unwrap().len(), 1, "{holds}");
    // --config as a flag, and the configuration's retention (retain alone asks for a cap).
    let out = quarry()
        .env_remove("QUARRY_STORE")
        .env("QUARRY_RECORDER_ADVERT", &advert)
        .arg("--config")
        .arg(&config)
        .args(["retain", "--dry-run", "--format", "json"])
        .output()
        .unwrap();
    ok(out);
    let out = cmd(&config, &advert)
        .args([
            "sql",
            "SELECT action FROM action ORDER BY time",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert_eq!(ok(out), "action\nhold\n", "a dry run records nothing");
    let out = cmd(&config, &advert)
        .args(["verify", "--format", "json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(report["store"], store.to_str().unwrap(), "{report}");
    assert!(
        report["segments_verified"].as_u64().unwrap() >= 1,
        "{report}"
    );

    // --store and $QUARRY_STORE override the file.
    let other = dir.path().join("other");
    let out = cmd(&config, &advert)
        .args(["hold", "--list", "--format", "json", "--store"])
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(ok(out).trim(), "[]");
    let out = cmd(&config, &advert)
        .env("QUARRY_STORE", &other)
        .args(["hold", "--list", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(ok(out).trim(), "[]");
}

#[test]
fn a_bad_config_names_file_line_and_key_and_a_stale_advert_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("quarry.toml");
    std::fs::write(&config, "store = \"/s\"\n\n[isolate]\nallowed = []\n").unwrap();
    let advert = dir.path().join("recorder.json");
    let out = cmd(&config, &advert).arg("ps").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(config.to_str().unwrap()) && err.contains("line 4") && err.contains("allowed"),
        "{err}"
    );
    let out = quarry()
        .args(["ps", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a named config must exist");

    // An advertisement left by a recorder that is gone: ignored, with a note.
    std::fs::write(&config, "").unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    std::fs::write(
        &advert,
        format!(
            r#"{{"store":"/nowhere","pid":{pid},"start_ticks":1,"exe_dev":1,"exe_ino":1,"started":""}}"#
        ),
    )
    .unwrap();
    let out = cmd(&config, &advert).arg("ps").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("note: ignoring") && err.contains(&format!("pid {pid}")),
        "{err}"
    );
}
