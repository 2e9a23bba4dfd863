//! Containers end to end, as root: real runc and podman containers are listed by `quarry ps`,
//! named in `quarry record --containers`, and every recorded row is attributed to its container
//! (or to the host).

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use common::containers::{PodmanContainer, RuncContainer};
use common::*;
use nix::sys::signal::Signal;
use quarry_store::schema::container_rows;
use quarry_store::{Store, Table};

fn ps_json() -> Vec<serde_json::Value> {
    let out = quarry().args(["ps", "--format", "json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn runc_container_is_listed_and_its_events_attributed() {
    if !require_root() {
        return;
    }
    let name = format!("qt-runc-{}", std::process::id());
    let c = RuncContainer::start(&name);
    let ps = ps_json();
    let listed = ps
        .iter()
        .find(|e| e["id"] == name.as_str())
        .expect("ps lists the runc container");
    assert_eq!(listed["init_pid"], c.pid());
    assert_eq!(listed["runtime"], "runc");
    assert_eq!(
        listed["cgroup_path"],
        format!("/{}/{name}", c.cgroup_parent)
    );

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (inside, outside) = (marker("in"), marker("out"));
    let rec = RecorderProcess::start(&store, &["--seal-interval", "1s"]);
    assert_eq!(
        c.exec(&["/bin/sh", "-c", &format!("/bin/true {inside}; exit 5")]),
        5
    );
    std::process::Command::new("/bin/true")
        .arg(&outside)
        .status()
        .unwrap();
    let out = rec.stop_with(Signal::SIGINT);
    assert!(out.status.success(), "{out:?}");

    let rows = process_rows(&store);
    // `runc exec` itself runs on the host with the marker in its argv; what it starts inside
    // the container is sh and true.
    let inside_rows: Vec<_> = rows_with_marker(&rows, &inside)
        .into_iter()
        .filter(|r| r.comm == "sh" || r.comm == "true")
        .collect();
    assert!(
        inside_rows
            .iter()
            .any(|r| r.event == "exec" && r.filename.as_deref() == Some("/bin/true"))
    );
    assert!(
        rows_with_marker(&rows, &inside)
            .iter()
            .any(|r| r.comm == "runc" && r.container_id.is_none()),
        "the host-side runc exec is the host's"
    );
    for r in &inside_rows {
        assert_eq!(r.container_id.as_deref(), Some(name.as_str()), "{r:?}");
    }
    let outside_rows = rows_with_marker(&rows, &outside);
    assert!(!outside_rows.is_empty());
    for r in &outside_rows {
        assert_eq!(r.container_id, None, "host rows carry no container: {r:?}");
    }

    // The container table says what was seen, and when.
    let seen: Vec<_> = Store::at(&store)
        .read_table(Table::Container)
        .unwrap()
        .iter()
        .flat_map(container_rows)
        .filter(|r| r.container_id == name)
        .collect();
    assert!(!seen.is_empty(), "container table has the container");
    assert!(
        seen.iter()
            .all(|r| r.init_pid == Some(c.pid()) && r.runtime == "runc")
    );
    assert!(
        seen.iter()
            .all(|r| r.first_seen <= r.last_seen && r.events > 0)
    );

    // ps --all shows it from the store too.
    let out = quarry()
        .args(["ps", "--all", "--format", "json", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let e = all.iter().find(|e| e["id"] == name.as_str()).unwrap();
    assert!(e["last_seen"].is_string());
}

#[test]
fn record_filters_to_named_containers_in_the_kernel() {
    if !require_root() {
        return;
    }
    let pid = std::process::id();
    let (a, b) = (
        RuncContainer::start(&format!("qt-a-{pid}")),
        RuncContainer::start(&format!("qt-b-{pid}")),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (in_a, in_b, on_host) = (marker("a"), marker("b"), marker("host"));

    // Named by unique id prefix.
    let prefix = &a.id[..a.id.len() - 1];
    let rec = RecorderProcess::start(&store, &["--seal-interval", "1s", "--containers", prefix]);
    // A grandchild in a child cgroup of A is recorded too.
    a.exec(&["/bin/sh", "-c", &format!("/bin/true {in_a}")]);
    b.exec(&["/bin/sh", "-c", &format!("/bin/true {in_b}")]);
    std::process::Command::new("/bin/true")
        .arg(&on_host)
        .status()
        .unwrap();
    let out = rec.stop_with(Signal::SIGINT);
    assert!(out.status.success(), "{out:?}");

    let rows = process_rows(&store);
    assert!(
        !rows_with_marker(&rows, &in_a).is_empty(),
        "container A is recorded"
    );
    assert!(
        rows_with_marker(&rows, &in_b).is_empty(),
        "container B is filtered out"
    );
    assert!(
        rows_with_marker(&rows, &on_host).is_empty(),
        "the host is filtered out"
    );
    assert!(
        rows.iter()
            .all(|r| r.container_id.as_deref() == Some(a.id.as_str())),
        "only A's rows"
    );
}

#[test]
fn unknown_or_ambiguous_container_names_are_clear_errors() {
    if !require_root() {
        return;
    }
    let pid = std::process::id();
    let _a = RuncContainer::start(&format!("qt-amb1-{pid}"));
    let _b = RuncContainer::start(&format!("qt-amb2-{pid}"));
    let dir = tempfile::tempdir().unwrap();

    let out = quarry()
        .args([
            "record",
            "--duration",
            "1s",
            "--containers",
            "no-such-container-xyz",
            "--store",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no running container matches 'no-such-container-xyz'"),
        "{err}"
    );
    assert!(
        err.contains(&format!("qt-amb1-{pid}")),
        "lists what is running: {err}"
    );

    let out = quarry()
        .args([
            "record",
            "--duration",
            "1s",
            "--containers",
            "qt-amb",
            "--store",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ambiguous") && err.contains(&format!("qt-amb2-{pid}")),
        "{err}"
    );
}

#[test]
fn podman_container_is_listed_by_name_and_attributed() {
    if !require_root() {
        return;
    }
    let name = format!("qt-podman-{}", std::process::id());
    let c = PodmanContainer::start(&name);
    let ps = ps_json();
    let listed = ps
        .iter()
        .find(|e| e["id"] == c.id.as_str())
        .expect("ps lists the podman container");
    assert_eq!(listed["name"], name.as_str());
    assert_eq!(listed["runtime"], "podman");
    assert_eq!(listed["init_pid"], c.pid());
    assert_eq!(listed["image"], format!("localhost/{name}:test"));

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let inside = marker("podman");
    // Named by its name.
    let rec = RecorderProcess::start(&store, &["--seal-interval", "1s", "--containers", &name]);
    assert_eq!(
        c.exec(&["/bin/sh", "-c", &format!("/bin/true {inside}")]),
        0
    );
    let out = rec.stop_with(Signal::SIGINT);
    assert!(out.status.success(), "{out:?}");
    // Filtered to the container: the host-side `podman exec` is not recorded at all.
    let rows = process_rows(&store);
    let inside_rows = rows_with_marker(&rows, &inside);
    assert!(
        inside_rows
            .iter()
            .any(|r| r.event == "exec" && r.comm == "true")
    );
    for r in inside_rows {
        assert_eq!(r.container_id.as_deref(), Some(c.id.as_str()), "{r:?}");
    }
}

#[test]
fn container_started_after_the_recorder_is_picked_up() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let rec = RecorderProcess::start(&store, &["--seal-interval", "1s"]);
    let name = format!("qt-late-{}", std::process::id());
    let c = RuncContainer::start(&name);
    let inside = marker("late");
    assert_eq!(
        c.exec(&["/bin/sh", "-c", &format!("/bin/true {inside}")]),
        0
    );
    let out = rec.stop_with(Signal::SIGINT);
    assert!(out.status.success(), "{out:?}");
    let rows = process_rows(&store);
    let exec = rows_with_marker(&rows, &inside)
        .into_iter()
        .find(|r| r.event == "exec" && r.comm == "true")
        .expect("the exec inside the late container is recorded");
    assert_eq!(exec.container_id.as_deref(), Some(name.as_str()));
}
