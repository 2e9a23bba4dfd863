//! `--respond RULE_OR_SEVERITY=isolate`: isolate the container an alert names.
//!
//! Off unless asked for. A container is isolated once per recording (on the first alert that
//! matches), on a thread of its own so detection goes on meanwhile, with the allow-list it is
//! given (`quarry record` passes the config file's), and the isolation is an `action` row like every responder action: its actor is
//! the recorder, its reason names the alert. Alerts without a container (a host process) are
//! never acted on: isolating the host's network is a person's decision.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use quarry_isolate::AllowRule;
use quarry_query::hunt::{Finding, Severity};
use quarry_store::Store;
use quarry_store::schema::{ActionRow, AlertRow};

use crate::DetectError;

/// When to act.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Trigger {
    Rule(String),
    AtLeast(Severity),
}

/// The response of a recording: its triggers, and the containers it has acted on.
pub struct Responder {
    triggers: Vec<Trigger>,
    allow: Vec<AllowRule>,
    store: PathBuf,
    /// Containers already acted on in this recording.
    done: HashSet<String>,
}

impl Responder {
    /// The response `specs` (`RULE_OR_SEVERITY=isolate` each) ask for, isolating with the
    /// allow-list `allow` and recording into `store`.
    pub fn new(
        specs: &[String],
        allow: &[AllowRule],
        store: &Path,
    ) -> Result<Responder, DetectError> {
        let mut triggers = Vec::new();
        for spec in specs {
            let wrong = |problem| DetectError::Respond {
                spec: spec.clone(),
                problem,
            };
            let Some((key, action)) = spec.split_once('=') else {
                return Err(wrong("use RULE_OR_SEVERITY=isolate, e.g. critical=isolate"));
            };
            if action.trim() != "isolate" {
                return Err(wrong("the only response is isolate"));
            }
            let key = key.trim();
            if key.is_empty() {
                return Err(wrong("name a rule id or a severity before '='"));
            }
            triggers.push(match Severity::parse(key) {
                Some(s) => Trigger::AtLeast(s),
                None => Trigger::Rule(key.to_string()),
            });
        }
        Ok(Responder {
            triggers,
            allow: allow.to_vec(),
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
    let actor = quarry_store::action::recorder_actor();
    let outcome = quarry_isolate::Target::find(container_id).and_then(|t| {
        let c = &t.container;
        quarry_isolate::isolate(
            c,
            &t.cgroup_dir,
            allow,
            Some(reason),
            false,
            &t.others_in_netns,
            &actor,
        )
        .map(|o| (c.name.clone(), o))
    });
    let name = outcome.as_ref().ok().and_then(|(name, _)| name.clone());
    let action_outcome =
        quarry_isolate::IsolateOutcome::action_outcome(outcome.as_ref().map(|(_, o)| o), |e| {
            quarry_store::human::with_causes(e)
        });
    match &outcome {
        Ok(_) => log::warn!("--respond: isolated container {container_id} ({reason})"),
        Err(e) => log::error!(
            "--respond: isolating container {container_id} failed: {}",
            quarry_store::human::with_causes(e)
        ),
    }
    let row = ActionRow::new(
        "isolate",
        actor,
        Some((container_id, name.as_deref())),
        Some(reason),
        action_outcome,
    );
    if let Err(e) = Store::record_action(store, &row) {
        log::error!("{}", quarry_store::action::unrecorded(store, &row, &e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_name_a_rule_or_a_severity_and_only_isolate() {
        let store = Path::new("/nonexistent");
        let r = Responder::new(
            &["critical=isolate".into(), "QH004=isolate".into()],
            &[],
            store,
        )
        .unwrap();
        assert_eq!(
            r.triggers,
            [
                Trigger::AtLeast(Severity::Critical),
                Trigger::Rule("QH004".into())
            ]
        );
        for (spec, says) in [
            ("critical", "use RULE_OR_SEVERITY=isolate"),
            ("critical=kill", "the only response is isolate"),
            ("=isolate", "name a rule id or a severity"),
        ] {
            let e = Responder::new(&[spec.into()], &[], store).err().unwrap();
            let text = e.to_string();
            assert!(
                text.starts_with("--respond ") && text.contains(says),
                "{text}"
            );
        }
    }
}
