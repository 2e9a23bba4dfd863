//! `--respond RULE_OR_SEVERITY=isolate`: isolate the container an alert names.
//!
//! Off unless asked for. A container is isolated once per recording (on the first alert that
//! matches), on a thread of its own so detection goes on meanwhile, with the config file's
//! allow-list, and the isolation is an `action` row like every responder action: its actor is
//! the recorder, its reason names the alert. Alerts without a container (a host process) are
//! never acted on: isolating the host's network is a person's decision.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use quarry_containers::{CgroupFs, Inventory};
use quarry_isolate::AllowRule;
use quarry_query::hunt::{Finding, Severity};
use quarry_store::schema::{ActionRow, AlertRow};

/// When to act.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Trigger {
    Rule(String),
    AtLeast(Severity),
}

pub struct Responder {
    triggers: Vec<Trigger>,
    allow: Vec<AllowRule>,
    store: PathBuf,
    /// Containers already acted on in this recording.
    done: HashSet<String>,
}

impl Responder {
    pub fn new(specs: &[String], store: &Path) -> anyhow::Result<Responder> {
        let mut triggers = Vec::new();
        for spec in specs {
            let Some((key, action)) = spec.split_once('=') else {
                bail!("--respond {spec:?}: use RULE_OR_SEVERITY=isolate, e.g. critical=isolate");
            };
            if action.trim() != "isolate" {
                bail!("--respond {spec:?}: the only response is isolate");
            }
            let key = key.trim();
            if key.is_empty() {
                bail!("--respond {spec:?}: name a rule id or a severity before '='");
            }
            triggers.push(match Severity::parse(key) {
                Some(s) => Trigger::AtLeast(s),
                None => Trigger::Rule(key.to_string()),
            });
        }
        let allow = crate::config::current()
            .isolate
            .allow
            .iter()
            .map(|a| a.parse())
            .collect::<Result<Vec<AllowRule>, _>>()
            .context("the config file's isolate allow-list")?;
        Ok(Responder {
            triggers,
            allow,
            store: store.to_path_buf(),
            done: HashSet::new(),
        })
    }

    fn matches(&self, f: &Finding) -> bool {
        self.triggers.iter().any(|t| match t {
            Trigger::Rule(id) => *id == f.rule,
            Trigger::AtLeast(s) => f.severity >= *s,
        })
    }

    /// Isolates the alert's container when a trigger matches (once per container).
    pub fn consider(&mut self, f: &Finding, alert: &AlertRow) {
        let Some(container_id) = f.container_id.clone() else {
            return;
        };
        if !self.matches(f) || !self.done.insert(container_id.clone()) {
            return;
        }
        let allow = self.allow.clone();
        let store = self.store.clone();
        let reason = format!(
            "alert {} ({} {}: {})",
            alert.alert_id, alert.rule, alert.severity, alert.title
        );
        let spawned = std::thread::Builder::new()
            .name("quarry-respond".into())
            .spawn(move || isolate(&container_id, &allow, &store, &reason));
        if let Err(e) = spawned {
            log::error!("--respond: cannot start the isolation: {e}");
        }
    }
}

fn isolate(container_id: &str, allow: &[AllowRule], store: &Path, reason: &str) {
    let actor = format!("quarry record (recorder, pid {})", std::process::id());
    let inventory = Inventory::discover();
    let outcome = inventory
        .resolve(container_id)
        .map_err(anyhow::Error::new)
        .and_then(|c| {
            let fs = CgroupFs::detect().context("cgroup v2 is not mounted")?;
            let cgroup_dir = fs.dir(&c.cgroup_path);
            let others: Vec<String> = match c.netns_inode {
                Some(ino) if !c.host_network => inventory
                    .containers
                    .iter()
                    .filter(|o| o.id != c.id && o.netns_inode == Some(ino))
                    .map(|o| o.display_name().to_string())
                    .collect(),
                _ => Vec::new(),
            };
            let o = quarry_isolate::isolate(
                c,
                &cgroup_dir,
                allow,
                Some(reason),
                false,
                &others,
                &actor,
            )
            .map_err(anyhow::Error::new)?;
            Ok((c.name.clone(), o))
        });
    let (result, error, name, detail) = match &outcome {
        Ok((name, o)) => (
            if o.changed { "ok" } else { "unchanged" },
            None,
            name.clone(),
            Some(serde_json::json!({
                "allow": o.isolation.allow.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                "effective_after_ms": o.effective_after_ms,
                "all_layers_after_ms": o.all_layers_after_ms,
            })),
        ),
        Err(e) => ("error", Some(format!("{e:#}")), None, None),
    };
    match &outcome {
        Ok(_) => log::warn!("--respond: isolated container {container_id} ({reason})"),
        Err(e) => log::error!("--respond: isolating container {container_id} failed: {e:#}"),
    }
    // A row that cannot be sealed is printed on stderr by `record`.
    let _ = crate::action::record(
        store,
        ActionRow {
            time: chrono::Utc::now(),
            action: "isolate".into(),
            actor,
            container_id: Some(container_id.to_string()),
            container_name: name,
            reason: Some(reason.to_string()),
            detail: detail.map(|d| d.to_string()),
            result: result.into(),
            error,
            command: quarry_store::action::command_line(),
        },
    );
}
