//! Packaging and deployment: shell completions and man pages from the real binary, the systemd
//! unit checked by `systemd-analyze verify`, the Kubernetes DaemonSet validated against the
//! Kubernetes OpenAPI schemas, and the Debian package built by cargo-deb and listed.
//! None of these needs root or touches the machine outside temporary directories and the
//! target directory's generated completions and man pages (scripts/package).

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every command `quarry --help` lists (the first word of each line of its Commands section).
fn subcommands() -> Vec<String> {
    let (code, help, err) = run(quarry().arg("--help"));
    assert_eq!(code, 0, "{err}");
    let section = help
        .split("Commands:")
        .nth(1)
        .expect("--help has a Commands section");
    let names: Vec<String> = section
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A command's line starts at column 2; its wrapped description further right.
        .filter(|l| !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 10, "too few commands in --help: {names:?}");
    names
}

#[test]
fn bash_completion_names_every_subcommand_and_their_flags() {
    let (code, script, err) = run(quarry().args(["completions", "bash"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        script.contains("complete -F _quarry") && script.contains("_quarry()"),
        "not a bash completion script for quarry:\n{}",
        &script[..script.len().min(400)]
    );
    for name in subcommands() {
        assert!(
            script.contains(&format!("quarry__{}", name.replace('-', "__")))
                || script.contains(&format!("quarry,{name})")),
            "bash completion lacks the subcommand {name}"
        );
    }
    for flag in ["--seal-interval", "--retain-age", "--allow", "--since"] {
        assert!(script.contains(flag), "bash completion lacks {flag}");
    }

    // The shell itself accepts it: sourcing defines the function and registers it.
    let (code, out, err) = run(Command::new("bash").arg("-c").arg(format!(
        "source /dev/stdin <<'QUARRY_EOF'\n{script}\nQUARRY_EOF\ncomplete -p quarry"
    )));
    assert_eq!(code, 0, "bash refused the completion script: {err}");
    assert!(out.contains("-F _quarry"), "{out}");

    // Other shells' scripts, and a clear usage error without a shell.
    for (shell, mark) in [("zsh", "#compdef quarry"), ("fish", "complete -c quarry")] {
        let (code, script, err) = run(quarry().args(["completions", shell]));
        assert_eq!(code, 0, "{err}");
        assert!(script.contains(mark), "{shell} script lacks {mark}");
        assert!(script.contains("timeline"), "{shell} script lacks timeline");
    }
    let (code, _, err) = run(quarry().arg("completions"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("<SHELL>"), "{err}");
}

#[test]
fn man_pages_one_per_subcommand_with_their_flags() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man1");
    let (code, _, err) = run(quarry().args(["completions", "--man"]).arg(&man));
    assert_eq!(code, 0, "{err}");
    let root = fs::read_to_string(man.join("quarry.1")).unwrap();
    let version = format!("\"quarry {}\"", env!("CARGO_PKG_VERSION"));
    assert!(root.contains(&format!(".TH quarry 1  {version}")), "{root}");
    for name in subcommands() {
        let page = man.join(format!("quarry-{name}.1"));
        let text = fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(
            text.contains(&format!(
                ".TH quarry-{name} 1  \"{name} {}\"",
                env!("CARGO_PKG_VERSION")
            )),
            "{}: no title with the version",
            page.display()
        );
        assert!(root.contains(&format!("quarry\\-{name}")) || root.contains(&name));
    }
    let record = fs::read_to_string(man.join("quarry-record.1")).unwrap();
    assert!(record.contains("seal\\-interval"), "{record}");
}

/// The generated man pages in a directory `man` finds through MANPATH.
fn man_dir(under: &Path) -> PathBuf {
    let man = under.join("man");
    let (code, _, err) = run(quarry()
        .args(["completions", "--man"])
        .arg(man.join("man1")));
    assert_eq!(code, 0, "{err}");
    man
}

/// A directory in the target directory (so the binary can be hard-linked into it).
fn target_tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// A file system root for `systemd-analyze --root`: the machine's own system units (the
/// targets the unit orders itself against), the unit under test and the built binary at
/// /usr/bin/quarry, where the unit runs it.
fn unit_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    let system_units = Path::new("/usr/lib/systemd/system");
    let units = root.join("usr/lib/systemd/system");
    fs::create_dir_all(&units).unwrap();
    for entry in fs::read_dir(system_units).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), units.join(entry.file_name())).unwrap();
        }
    }
    let etc = root.join("etc/systemd/system");
    fs::create_dir_all(&etc).unwrap();
    fs::copy(
        repo().join("deploy/systemd/quarry.service"),
        etc.join("quarry.service"),
    )
    .unwrap();
    let bin = root.join("usr/bin");
    fs::create_dir_all(&bin).unwrap();
    let quarry_bin = Path::new(env!("CARGO_BIN_EXE_quarry"));
    fs::hard_link(quarry_bin, bin.join("quarry"))
        .or_else(|_| fs::copy(quarry_bin, bin.join("quarry")).map(|_| ()))
        .unwrap();
    root
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED: systemd-analyze is not installed (scripts/setup installs the systemd \
             package that has it); deploy/systemd/quarry.service was not verified"
        );
        return;
    }
    let dir = target_tempdir();
    let root = unit_root(dir.path());
    let man = man_dir(dir.path());
    // Warnings (an unknown directive, a bad value) count as failures: systemd ignores what it
    // does not understand, which would silently drop hardening.
    let (code, out, err) = run(Command::new("systemd-analyze")
        .env("MANPATH", &man)
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("quarry.service"));
    assert_eq!(code, 0, "systemd-analyze verify failed:\n{out}{err}");
    assert!(
        out.trim().is_empty() && err.trim().is_empty(),
        "systemd-analyze verify warned:\n{out}{err}"
    );

    // The settings the recorder depends on, and the hardening, are there as written.
    let unit = fs::read_to_string(repo().join("deploy/systemd/quarry.service")).unwrap();
    let value = |key: &str| -> String {
        let values: Vec<&str> = unit
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .collect();
        assert_eq!(values.len(), 1, "{key} set {} times", values.len());
        values[0].to_owned()
    };
    assert!(value("ExecStart").starts_with("/usr/bin/quarry record"));
    assert_eq!(
        value("Environment"),
        "QUARRY_CONFIG=/etc/quarry/quarry.toml"
    );
    assert_eq!(value("KillSignal"), "SIGINT");
    assert_eq!(value("Restart"), "on-failure");
    assert_eq!(value("LimitMEMLOCK"), "infinity");
    assert_eq!(value("ProtectSystem"), "strict");
    assert_eq!(value("ProtectHome"), "yes");
    assert_eq!(value("PrivateTmp"), "yes");
    assert_eq!(value("NoNewPrivileges"), "yes");
    assert!(value("TimeoutStopSec").ends_with('s'));
    assert!(value("MemoryMax").ends_with('G'));
    assert_eq!(value("StateDirectory"), "quarry");
    assert_eq!(value("RuntimeDirectory"), "quarry");
    assert_eq!(value("RuntimeDirectoryPreserve"), "yes");
    let caps = value("CapabilityBoundingSet");
    let caps: Vec<&str> = caps.split_whitespace().collect();
    for cap in [
        "CAP_BPF",
        "CAP_PERFMON",
        "CAP_SYS_ADMIN",
        "CAP_SYS_RESOURCE",
        "CAP_NET_ADMIN",
        "CAP_SYS_PTRACE",
    ] {
        assert!(caps.contains(&cap), "{cap} missing from {caps:?}");
    }
    assert!(!value("RestrictAddressFamilies").contains("AF_INET"));

    // systemd's own rating of the sandbox (0 is the most confined, 10 none at all): a change
    // that drops hardening shows here.
    let (code, out, err) = run(Command::new("systemd-analyze")
        .arg("security")
        .arg("--offline=yes")
        .arg(format!("--root={}", root.display()))
        .arg("quarry.service"));
    assert_eq!(code, 0, "systemd-analyze security failed:\n{out}{err}");
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    let exposure: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("exposure level in {line:?}"));
    eprintln!("systemd-analyze security: {}", line.trim());
    assert!(exposure <= 4.0, "{line}");
}

/// The DaemonSet manifest as JSON documents (PyYAML from the test readers' venv).
fn daemonset_documents(path: &Path) -> Vec<serde_json::Value> {
    let (code, out, err) = run(python()
        .arg("-c")
        .arg("import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))")
        .arg(path));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn daemonset_validates_against_the_kubernetes_schemas() {
    let manifest = repo().join("deploy/kubernetes/daemonset.yaml");
    // Strict: a misspelt field is an error, not ignored.
    let (code, out, err) = run(python()
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(&manifest));
    assert_eq!(code, 0, "kubernetes-validate:\n{out}{err}");
    assert!(
        out.contains("passed for resource daemonset/quarry-recorder"),
        "{out}{err}"
    );

    // The validator does catch mistakes: the same manifest with a misspelt field fails.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = fs::read_to_string(&manifest).unwrap();
    fs::write(&bad, text.replacen("hostPID: true", "hostPid: true", 1)).unwrap();
    let (code, out, err) = run(python()
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(&bad));
    assert_ne!(code, 0, "a misspelt field passed:\n{out}{err}");
    assert!(format!("{out}{err}").contains("hostPid"), "{out}{err}");

    // What the recorder needs on a node is there.
    let docs = daemonset_documents(&manifest);
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let c = &pod["containers"][0];
    let caps: Vec<&str> = c["securityContext"]["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for cap in [
        "BPF",
        "PERFMON",
        "SYS_ADMIN",
        "SYS_RESOURCE",
        "NET_ADMIN",
        "SYS_PTRACE",
    ] {
        assert!(caps.contains(&cap), "{cap} not in {caps:?}");
    }
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert!(c["resources"]["limits"]["cpu"].is_string());
    let host_paths: Vec<&str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    for p in [
        "/sys/fs/bpf",
        "/sys/kernel/btf",
        "/sys/fs/cgroup",
        "/proc",
        "/run/quarry",
        "/var/lib/quarry/store",
    ] {
        assert!(host_paths.contains(&p), "no hostPath {p} in {host_paths:?}");
    }
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    for m in [
        "/sys/fs/bpf",
        "/var/lib/quarry/store",
        "/run/quarry",
        "/etc/quarry",
    ] {
        assert!(mounts.contains(&m), "{m} not mounted: {mounts:?}");
    }
}

#[test]
fn debian_package_has_binary_unit_config_completions_and_man_pages() {
    let Some(cargo_deb) = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
    else {
        panic!(
            "cargo-deb is not installed: run `sudo scripts/setup` (it installs the pinned version)"
        );
    };
    eprintln!("{}", String::from_utf8_lossy(&cargo_deb.stdout).trim());
    // scripts/package with the debug binary this test suite was built with: CI needs no release
    // build for this.
    let exe = Path::new(env!("CARGO_BIN_EXE_quarry"));
    assert_eq!(exe.parent().unwrap().file_name().unwrap(), "debug");
    let out = target_tempdir();
    let (code, stdout, err) = run(Command::new(repo().join("scripts/package"))
        .args(["--profile", "dev", "--no-build", "--fast", "--output"])
        .arg(out.path())
        .env("CARGO_TARGET_DIR", exe.parent().unwrap().parent().unwrap()));
    assert_eq!(code, 0, "scripts/package failed:\n{stdout}{err}");
    let debs: Vec<PathBuf> = fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}\n{stdout}{err}");
    let deb = &debs[0];

    let (code, listing, err) = run(Command::new("dpkg-deb").arg("-c").arg(deb));
    assert_eq!(code, 0, "{err}");
    eprintln!("{listing}");
    let files: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    let has = |path: &str| files.iter().any(|f| f.trim_start_matches('.') == path);
    for path in [
        "/usr/bin/quarry",
        "/usr/lib/systemd/system/quarry.service",
        "/etc/quarry/quarry.toml",
        "/usr/share/bash-completion/completions/quarry",
        "/usr/share/zsh/vendor-completions/_quarry",
        "/usr/share/fish/vendor_completions.d/quarry.fish",
        "/usr/share/doc/quarry/README.md",
    ] {
        assert!(has(path), "{path} not in the package:\n{listing}");
    }
    for name in std::iter::once("quarry".to_owned())
        .chain(subcommands().iter().map(|s| format!("quarry-{s}")))
    {
        assert!(
            has(&format!("/usr/share/man/man1/{name}.1"))
                || has(&format!("/usr/share/man/man1/{name}.1.gz")),
            "man page {name}.1 not in the package:\n{listing}"
        );
    }
    let binary = listing
        .lines()
        .find(|l| l.ends_with("./usr/bin/quarry"))
        .unwrap();
    assert!(binary.starts_with("-rwxr-xr-x"), "{binary}");

    // The package's control data: its name, and the configuration file as a conffile (dpkg
    // keeps an administrator's edits on upgrade).
    let (code, package, err) = run(Command::new("dpkg-deb")
        .args(["-f"])
        .arg(deb)
        .arg("Package"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(package.trim(), "quarry");
    let (code, conffiles, err) = run(Command::new("dpkg-deb").arg("-I").arg(deb).arg("conffiles"));
    assert_eq!(code, 0, "{err}");
    assert!(conffiles.contains("/etc/quarry/quarry.toml"), "{conffiles}");

    // The files are the project's own: the unit and the config byte for byte.
    let x = out.path().join("x");
    let (code, _, err) = run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&x));
    assert_eq!(code, 0, "{err}");
    for (inside, source) in [
        (
            "usr/lib/systemd/system/quarry.service",
            "deploy/systemd/quarry.service",
        ),
        ("etc/quarry/quarry.toml", "deploy/quarry.toml"),
    ] {
        assert_eq!(
            fs::read(x.join(inside)).unwrap(),
            fs::read(repo().join(source)).unwrap(),
            "{inside}"
        );
    }
    let (code, version, err) = run(Command::new(x.join("usr/bin/quarry")).arg("--version"));
    assert_eq!(code, 0, "{err}");
    assert!(version.starts_with("quarry "), "{version}");
}
