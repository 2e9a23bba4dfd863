//! `quarry-bench-snapshot`: how long `quarry snapshot` freezes a container and takes in all,
//! against `runc checkpoint --leave-running` of the same container.
//!
//! ```text
//! sudo quarry-bench-snapshot [--runs N] [--mem-mb M] [--format json]
//! ```
//!
//! Two runc containers are made from Debian's busybox-static: a small one (a shell loop) and one
//! holding M MiB (default 200) in a shell variable. Each is snapshotted N times with the
//! `quarry` binary next to this one and checkpointed N times with runc; medians are reported.
//! Everything made is removed afterwards. Timings are reported, never asserted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

struct Container {
    id: String,
    cgroup_parent: String,
    _bundle: tempfile::TempDir,
}

impl Container {
    fn start(id: &str, script: &str) -> anyhow::Result<Container> {
        let bundle = tempfile::tempdir()?;
        let rootfs = bundle.path().join("rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(d))?;
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .context("/bin/busybox (busybox-static; scripts/setup installs it)")?;
        for applet in ["sh", "sleep", "head", "tr", "cat"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
        }
        let st = Command::new("runc")
            .arg("spec")
            .current_dir(bundle.path())
            .status()?;
        if !st.success() {
            bail!("runc spec failed");
        }
        let path = bundle.path().join("config.json");
        let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        let cgroup_parent = format!("quarry-bench-{}", std::process::id());
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = serde_json::json!(["sh", "-c", script]);
        config["linux"]["cgroupsPath"] = format!("/{cgroup_parent}/{id}").into();
        std::fs::write(&path, config.to_string())?;
        let c = Container {
            id: id.into(),
            cgroup_parent,
            _bundle: bundle,
        };
        // stdio /dev/null: runc checkpoint cannot dump a container whose stdio is a host file.
        let st = Command::new("runc")
            .args(["run", "-d", "--bundle"])
            .arg(c._bundle.path())
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("runc run {id} failed");
        }
        Ok(c)
    }

    fn init_pid(&self) -> anyhow::Result<i32> {
        let out = Command::new("runc").args(["state", &self.id]).output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(v["pid"].as_i64().context("runc state has no pid")? as i32)
    }

    /// Resident memory of every process in the container's cgroup.
    fn rss_bytes(&self) -> u64 {
        let procs = std::fs::read_to_string(format!(
            "/sys/fs/cgroup/unified/{}/{}/cgroup.procs",
            self.cgroup_parent, self.id
        ))
        .or_else(|_| {
            std::fs::read_to_string(format!(
                "/sys/fs/cgroup/{}/{}/cgroup.procs",
                self.cgroup_parent, self.id
            ))
        })
        .unwrap_or_default();
        procs
            .lines()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
            .filter_map(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .map(|kib| kib * 1024)
            .sum()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["delete", "-f", &self.id])
            .output();
        for h in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let parent = h.path().join(&self.cgroup_parent);
            let _ = std::fs::remove_dir(parent.join(&self.id));
            let _ = std::fs::remove_dir(&parent);
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn quarry_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let q = me.with_file_name("quarry");
    if !q.exists() {
        bail!("{} not found next to this benchmark", q.display());
    }
    Ok(q)
}

#[derive(serde::Serialize)]
struct Row {
    container: &'static str,
    rss_mib: f64,
    runs: usize,
    quarry_frozen_ms: f64,
    quarry_dump_ms: f64,
    quarry_total_ms: f64,
    quarry_wall_ms: f64,
    runc_checkpoint_ms: f64,
}

fn bench(name: &'static str, c: &Container, runs: usize, work: &Path) -> anyhow::Result<Row> {
    let quarry = quarry_binary()?;
    let (mut frozen, mut dump, mut total, mut wall, mut runc) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let case = work.join(format!("{name}-case-{i}"));
        let t = Instant::now();
        let out = Command::new(&quarry)
            .args(["snapshot", &c.id, "--format", "json", "--case"])
            .arg(&case)
            .arg("--store")
            .arg(work.join("store"))
            .output()?;
        wall.push(t.elapsed().as_secs_f64() * 1000.0);
        if !out.status.success() {
            bail!(
                "quarry snapshot failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let r: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        frozen.push(r["timings"]["frozen_ms"].as_f64().unwrap_or(0.0));
        dump.push(r["timings"]["dump_ms"].as_f64().unwrap_or(0.0));
        total.push(r["timings"]["total_ms"].as_f64().unwrap_or(0.0));
        let _ = std::fs::remove_dir_all(&case);

        let images = work.join(format!("{name}-runc-{i}"));
        let t = Instant::now();
        let out = Command::new("runc")
            .args(["checkpoint", "--leave-running", "--image-path"])
            .arg(&images)
            .arg(&c.id)
            .output()?;
        runc.push(t.elapsed().as_secs_f64() * 1000.0);
        if !out.status.success() {
            bail!(
                "runc checkpoint failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_dir_all(&images);
    }
    Ok(Row {
        container: name,
        rss_mib: c.rss_bytes() as f64 / (1 << 20) as f64,
        runs,
        quarry_frozen_ms: median(&mut frozen),
        quarry_dump_ms: median(&mut dump),
        quarry_total_ms: median(&mut total),
        quarry_wall_ms: median(&mut wall),
        runc_checkpoint_ms: median(&mut runc),
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut runs = 5usize;
    let mut mem_mb = 200u64;
    let mut json = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => runs = it.next().context("--runs N")?.parse()?,
            "--mem-mb" => mem_mb = it.next().context("--mem-mb M")?.parse()?,
            "--format" => json = it.next().map(String::as_str) == Some("json"),
            _ => bail!("usage: quarry-bench-snapshot [--runs N] [--mem-mb M] [--format json]"),
        }
    }
    let work = tempfile::tempdir()?;
    let pid = std::process::id();
    let small = Container::start(
        &format!("qb-snap-small-{pid}"),
        "while true; do sleep 1; done",
    )?;
    let big = Container::start(
        &format!("qb-snap-big-{pid}"),
        &format!(
            "x=$(head -c {} /dev/zero | tr '\\0' a); while true; do sleep 1; done",
            mem_mb << 20
        ),
    )?;
    small.init_pid()?;
    big.init_pid()?;
    // Wait until the big one holds its memory (the shell builds the string in a pipe).
    let deadline = Instant::now() + Duration::from_secs(120);
    while big.rss_bytes() < (mem_mb << 20) || std::fs::read_dir("/proc").is_err() {
        if Instant::now() > deadline {
            bail!("the big container never reached {mem_mb} MiB");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // ... and has finished building it (the pipe's processes gone).
    std::thread::sleep(Duration::from_secs(2));
    let results = vec![
        bench("small", &small, runs, work.path())?,
        bench("big", &big, runs, work.path())?,
    ];
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        println!(
            "{:<6} {:>8} {:>10} {:>9} {:>10} {:>9} {:>13}",
            "", "RSS MiB", "frozen ms", "dump ms", "total ms", "wall ms", "runc ckpt ms"
        );
        for r in &results {
            println!(
                "{:<6} {:>8.0} {:>10.0} {:>9.0} {:>10.0} {:>9.0} {:>13.0}",
                r.container,
                r.rss_mib,
                r.quarry_frozen_ms,
                r.quarry_dump_ms,
                r.quarry_total_ms,
                r.quarry_wall_ms,
                r.runc_checkpoint_ms
            );
        }
        println!(
            "median of {runs} runs; frozen = CRIU's own freezing+frozen time; total = inside \
             quarry, wall = the whole command as run; runc = `runc checkpoint --leave-running`"
        );
    }
    Ok(())
}
