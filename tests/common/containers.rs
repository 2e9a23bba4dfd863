//! Real containers for root tests: runc from a busybox rootfs, and podman from the same rootfs
//! imported as an image. Each cleans up everything it created when dropped, also on failure.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Applets the test rootfs provides.
const APPLETS: &[&str] = &[
    "sh", "sleep", "true", "cat", "echo", "nc", "ls", "mkdir", "rm", "ps", "cp", "unshare",
];

/// Builds a minimal root filesystem from Debian's busybox-static.
pub fn busybox_rootfs(dir: &Path) {
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox"))
        .expect("/bin/busybox (busybox-static; scripts/setup installs it)");
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A runc container running `sleep` in its own cgroup `/<parent>/<id>` (an arbitrary,
/// runtime-agnostic path, as plain runc users choose).
pub struct RuncContainer {
    pub id: String,
    pub cgroup_parent: String,
    _bundle: tempfile::TempDir,
}

impl RuncContainer {
    pub fn start(id: &str) -> RuncContainer {
        RuncContainer::start_in_netns(id, None)
    }

    /// Starts the container in an existing network namespace (`/var/run/netns/<name>`).
    pub fn start_in_netns(id: &str, netns: Option<&str>) -> RuncContainer {
        RuncContainer::start_with(id, netns, &["sleep", "100000"], &[])
    }

    /// Starts `args` as the container's process, with a tmpfs at each of `tmpfs` (writable
    /// places inside the read-only root; CRIU saves their contents with the images).
    pub fn start_with(
        id: &str,
        netns: Option<&str>,
        args: &[&str],
        tmpfs: &[&str],
    ) -> RuncContainer {
        RuncContainer::start_custom(id, netns, args, tmpfs, |_, _| {})
    }

    /// Starts a `sleep` container after `tweak` has adjusted its config.json and rootfs (a
    /// writable root, files an attack expects to find).
    pub fn start_tweaked(
        id: &str,
        netns: Option<&str>,
        tweak: impl FnOnce(&mut serde_json::Value, &Path),
    ) -> RuncContainer {
        RuncContainer::start_custom(id, netns, &["sleep", "100000"], &[], tweak)
    }

    fn start_custom(
        id: &str,
        netns: Option<&str>,
        args: &[&str],
        tmpfs: &[&str],
        tweak: impl FnOnce(&mut serde_json::Value, &Path),
    ) -> RuncContainer {
        let bundle = tempfile::tempdir().unwrap();
        busybox_rootfs(&bundle.path().join("rootfs"));
        run_ok(Command::new("runc").arg("spec").current_dir(bundle.path()));
        let config_path = bundle.path().join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
        let cgroup_parent = format!("quarry-test-{}", std::process::id());
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = serde_json::json!(args);
        for dest in tmpfs {
            config["mounts"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({
                    "destination": dest, "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "nodev", "mode=1777"]
                }));
        }
        config["linux"]["cgroupsPath"] = format!("/{cgroup_parent}/{id}").into();
        if let Some(ns) = netns {
            for n in config["linux"]["namespaces"].as_array_mut().unwrap() {
                if n["type"] == "network" {
                    n["path"] = format!("/var/run/netns/{ns}").into();
                }
            }
        }
        tweak(&mut config, &bundle.path().join("rootfs"));
        std::fs::write(&config_path, config.to_string()).unwrap();
        let c = RuncContainer {
            id: id.to_string(),
            cgroup_parent,
            _bundle: bundle,
        };
        // The container inherits runc's stdio: a pipe here would never reach EOF, so runc's
        // messages go to a file in the bundle instead.
        let log = c._bundle.path().join("runc.stderr");
        let status = Command::new("runc")
            .args(["run", "-d", "--bundle"])
            .arg(c._bundle.path())
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "runc run {id}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        c
    }

    /// The init pid runc reports.
    pub fn pid(&self) -> i32 {
        let out = run_ok(Command::new("runc").args(["state", &self.id]));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["pid"].as_i64().unwrap() as i32
    }

    /// Runs a command inside the container and returns its exit code.
    pub fn exec(&self, args: &[&str]) -> i32 {
        Command::new("runc")
            .args(["exec", &self.id])
            .args(args)
            .stdin(Stdio::null())
            .status()
            .unwrap()
            .code()
            .unwrap_or(-1)
    }
}

impl Drop for RuncContainer {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["kill", &self.id, "KILL"])
            .output();
        let _ = Command::new("runc")
            .args(["delete", "-f", &self.id])
            .output();
        // runc removes the container's cgroups but not the parent directories it created.
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let parent = hierarchy.path().join(&self.cgroup_parent);
            let _ = std::fs::remove_dir(parent.join(&self.id));
            let _ = std::fs::remove_dir(&parent);
        }
    }
}

/// The containers.conf podman needs on a Debian 12 host with hybrid cgroups (cgroupfs manager, file events), kept in
/// a file of the test's own and passed by CONTAINERS_CONF, so the host's config is untouched.
pub struct Podman {
    conf: tempfile::TempDir,
}

impl Podman {
    pub fn new() -> Podman {
        let conf = tempfile::tempdir().unwrap();
        std::fs::write(
            conf.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"runc\"\n",
        )
        .unwrap();
        Podman { conf }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", self.conf.path().join("containers.conf"));
        c
    }
}

/// A podman container from an image imported from the busybox rootfs; removed (with its image)
/// when dropped.
pub struct PodmanContainer {
    pub name: String,
    pub id: String,
    image: String,
    podman: Podman,
}

impl PodmanContainer {
    pub fn start(name: &str) -> PodmanContainer {
        let podman = Podman::new();
        let dir = tempfile::tempdir().unwrap();
        busybox_rootfs(&dir.path().join("rootfs"));
        let tar = dir.path().join("rootfs.tar");
        run_ok(
            Command::new("tar")
                .arg("-cf")
                .arg(&tar)
                .arg("-C")
                .arg(dir.path().join("rootfs"))
                .arg("."),
        );
        let image = format!("localhost/{name}:test");
        run_ok(podman.cmd().args(["import", "-q"]).arg(&tar).arg(&image));
        let mut c = PodmanContainer {
            name: name.to_string(),
            id: String::new(),
            image: image.clone(),
            podman,
        };
        let out = run_ok(c.podman.cmd().args([
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            name,
            &image,
            "sleep",
            "100000",
        ]));
        c.id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        c
    }

    pub fn pid(&self) -> i32 {
        let out =
            run_ok(
                self.podman
                    .cmd()
                    .args(["inspect", &self.name, "--format", "{{.State.Pid}}"]),
            );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    pub fn exec(&self, args: &[&str]) -> i32 {
        self.podman
            .cmd()
            .args(["exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .status()
            .unwrap()
            .code()
            .unwrap_or(-1)
    }
}

impl Drop for PodmanContainer {
    fn drop(&mut self) {
        let _ = self
            .podman
            .cmd()
            .args(["rm", "-f", "-t", "0", &self.name])
            .output();
        let _ = self.podman.cmd().args(["rmi", "-f", &self.image]).output();
    }
}

/// A network namespace joined to the host by a veth pair, on its own test subnet of
/// 198.18.0.0/15: the host end is `.1`, the namespace end `.2`, and `.5` is an extra host
/// address (a "collector"). Removed when dropped.
pub struct TestNet {
    pub netns: String,
    host_if: String,
    pub host: String,
    pub inside: String,
    pub collector: String,
}

impl TestNet {
    pub fn new(tag: &str) -> TestNet {
        let pid = std::process::id();
        // Tests run in processes of their own, concurrently with other test binaries: a
        // subnet is free when no host interface has an address in it, checked and taken under
        // a machine-wide lock (held until the host end has its address).
        let lock = std::fs::File::create("/run/lock/quarry-testnet.lock").unwrap();
        // SAFETY: flock on a descriptor we own; closing it (end of this function) unlocks.
        let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
        assert_eq!(locked, 0);
        let used = String::from_utf8_lossy(
            &run_ok(Command::new("ip").args(["-o", "-4", "addr", "show"])).stdout,
        )
        .into_owned();
        let start = (pid as usize * 7 + tag.bytes().map(usize::from).sum::<usize>()) % 250;
        let n = (0..250)
            .map(|i| (start + i) % 250)
            .find(|n| !used.contains(&format!("inet 198.18.{n}.")))
            .expect("a free 198.18.N.0/29 test subnet");
        let net = TestNet {
            netns: format!("qt{tag}{pid}"),
            host_if: format!("qh{tag}{pid}"),
            host: format!("198.18.{n}.1"),
            inside: format!("198.18.{n}.2"),
            collector: format!("198.18.{n}.5"),
        };
        let peer = format!("qc{tag}{pid}");
        let ip = |args: &[&str]| {
            run_ok(Command::new("ip").args(args));
        };
        ip(&["netns", "add", &net.netns]);
        ip(&[
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &net.netns]);
        ip(&[
            "addr",
            "add",
            &format!("{}/29", net.host),
            "dev",
            &net.host_if,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{}/32", net.collector),
            "dev",
            &net.host_if,
        ]);
        ip(&["link", "set", &net.host_if, "up"]);
        ip(&[
            "-n",
            &net.netns,
            "addr",
            "add",
            &format!("{}/29", net.inside),
            "dev",
            &peer,
        ]);
        ip(&["-n", &net.netns, "link", "set", &peer, "up"]);
        ip(&["-n", &net.netns, "link", "set", "lo", "up"]);
        ip(&[
            "-n", &net.netns, "route", "add", "default", "via", &net.host,
        ]);
        net
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}
