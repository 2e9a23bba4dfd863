//! Alerts as their receivers read them: one JSON object per alert, in Falco's shape (what
//! Falco's outputs and falcosidekick consume) or as an OCSF Detection Finding (class 2004).
//!
//! Pure formatting of an [`AlertRow`]: this module must not deliver, queue or store anything
//! (that is the recorder's), and must not lose what the row says: every value of the row
//! appears in both formats, text is only ever a JSON string (escaped by serde_json, so a
//! hostile comm or path cannot break the one-object-per-line framing).

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::schema::AlertRow;

/// The wire formats of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertFormat {
    /// Falco's JSON output: `time`, `rule`, `priority`, `source`, `hostname`, `output`,
    /// `output_fields`, `tags`.
    Falco,
    /// OCSF 1.1 Detection Finding (class_uid 2004).
    Ocsf,
}

/// The alert as one JSON object (no newline inside: one line per alert).
pub fn format(format: AlertFormat, host: &str, alert: &AlertRow) -> String {
    let value = match format {
        AlertFormat::Falco => falco(host, alert),
        AlertFormat::Ocsf => ocsf(host, alert),
    };
    value.to_string()
}

/// A stable id for the alert `rule` raised over the row (`host`, `source_table`, `ktime_ns`,
/// `pid`): the same alert gets the same id however often it is formatted or re-raised.
pub fn alert_id(
    rule: &str,
    host: &str,
    source_table: Option<&str>,
    ktime_ns: Option<u64>,
    pid: Option<i32>,
) -> String {
    let mut h = Sha256::new();
    for part in [
        rule,
        host,
        source_table.unwrap_or(""),
        &ktime_ns.map(|k| k.to_string()).unwrap_or_default(),
        &pid.map(|p| p.to_string()).unwrap_or_default(),
    ] {
        // Length-prefixed, so no two different tuples hash the same text.
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(&h.finalize()[..12])
}

/// Falco's priority for a Quarry severity.
pub fn falco_priority(severity: &str) -> &'static str {
    match severity {
        "critical" => "Critical",
        "high" => "Error",
        "medium" => "Warning",
        "low" => "Notice",
        _ => "Informational",
    }
}

/// OCSF's severity_id for a Quarry severity (1 informational .. 5 critical).
pub fn ocsf_severity(severity: &str) -> (u8, &'static str) {
    match severity {
        "critical" => (5, "Critical"),
        "high" => (4, "High"),
        "medium" => (3, "Medium"),
        "low" => (2, "Low"),
        _ => (1, "Informational"),
    }
}

/// The row's further fields (a JSON object); anything else is kept as text, not dropped.
fn extra_fields(alert: &AlertRow) -> Map<String, Value> {
    match alert.fields.as_deref().map(serde_json::from_str::<Value>) {
        None => Map::new(),
        Some(Ok(Value::Object(map))) => map,
        Some(_) => {
            let mut map = Map::new();
            map.insert("quarry.fields".into(), json!(alert.fields));
            map
        }
    }
}

fn tags(alert: &AlertRow) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for t in alert.mitre.iter().chain(&alert.tags) {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    tags
}

/// Falco's shape.
pub fn falco(host: &str, alert: &AlertRow) -> Value {
    let time = alert
        .time
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let priority = falco_priority(&alert.severity);
    let mut fields = extra_fields(alert);
    // The alert's own fields win over the row's extras of the same name.
    let own = [
        (
            "evt.time",
            json!(
                alert
                    .event_time
                    .and_then(|t| t.timestamp_nanos_opt())
                    .or_else(|| alert.time.timestamp_nanos_opt())
            ),
        ),
        ("container.id", json!(alert.container_id)),
        ("container.name", json!(alert.container_name)),
        ("container.image.repository", json!(alert.image)),
        ("proc.pid", json!(alert.pid)),
        ("proc.name", json!(alert.comm)),
        ("quarry.alert_id", json!(alert.alert_id)),
        ("quarry.rule_id", json!(alert.rule)),
        ("quarry.rule_source", json!(alert.rule_source)),
        ("quarry.source_table", json!(alert.source_table)),
        ("quarry.ktime_ns", json!(alert.ktime_ns)),
    ];
    for (k, v) in own {
        fields.insert(k.into(), v);
    }
    let container = alert
        .container_id
        .as_deref()
        .map(|c| c.chars().take(12).collect::<String>())
        .unwrap_or_else(|| "host".into());
    let output = format!(
        "{} {}: {} ({}) container={} pid={} comm={} alert={}",
        alert.time.format("%H:%M:%S%.9f"),
        priority,
        alert.title,
        alert.evidence,
        container,
        alert
            .pid
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into()),
        alert.comm.as_deref().unwrap_or("-"),
        alert.alert_id,
    );
    json!({
        "time": time,
        "rule": alert.title,
        "priority": priority,
        "source": "syscall",
        "hostname": host,
        "output": output,
        "output_fields": Value::Object(fields),
        "tags": tags(alert),
    })
}

/// OCSF Detection Finding (2004), activity Create.
pub fn ocsf(host: &str, alert: &AlertRow) -> Value {
    let (severity_id, severity) = ocsf_severity(&alert.severity);
    let millis = alert.time.timestamp_millis();
    let extra = extra_fields(alert);
    let text = |key: &str| extra.get(key).and_then(Value::as_str).map(str::to_string);
    let mut process = Map::new();
    process.insert("pid".into(), json!(alert.pid));
    process.insert("name".into(), json!(alert.comm));
    if let Some(path) = text("proc.exepath") {
        process.insert("file".into(), json!({ "path": path }));
    }
    if let Some(cmd) = text("proc.cmdline") {
        process.insert("cmd_line".into(), json!(cmd));
    }
    let mut evidence = Map::new();
    evidence.insert("process".into(), Value::Object(process));
    if alert.container_id.is_some() {
        evidence.insert(
            "container".into(),
            json!({
                "uid": alert.container_id,
                "name": alert.container_name,
                "image": { "name": alert.image },
            }),
        );
    }
    evidence.insert(
        "data".into(),
        json!({
            "source_table": alert.source_table,
            "ktime_ns": alert.ktime_ns,
            "event_time": alert.event_time.map(|t| t.timestamp_millis()),
        }),
    );
    let attacks: Vec<Value> = alert
        .mitre
        .iter()
        .map(|t| json!({ "technique": { "uid": t } }))
        .collect();
    json!({
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": 1,
        "activity_name": "Create",
        "type_uid": 200401,
        "type_name": "Detection Finding: Create",
        "time": millis,
        "severity_id": severity_id,
        "severity": severity,
        "status_id": 1,
        "status": "New",
        "message": alert.evidence,
        "metadata": {
            "version": "1.1.0",
            "product": { "name": "Quarry", "vendor_name": "Quarry",
                         "version": env!("CARGO_PKG_VERSION") },
            "labels": tags(alert),
        },
        "device": { "hostname": host, "type_id": 0 },
        "finding_info": {
            "uid": alert.alert_id,
            "title": alert.title,
            "desc": alert.evidence,
            "created_time": millis,
            "types": [alert.rule_source],
            "analytic": { "uid": alert.rule, "name": alert.title, "type_id": 1, "type": "Rule" },
            "attacks": attacks,
        },
        "evidences": [Value::Object(evidence)],
        "unmapped": Value::Object(extra),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn alert() -> AlertRow {
        let t = Utc.with_ymd_and_hms(2026, 11, 1, 10, 0, 0).unwrap();
        AlertRow {
            time: t + chrono::Duration::microseconds(1_500_123),
            alert_id: alert_id("QH003", "h1", Some("net"), Some(42), Some(7)),
            rule: "QH003".into(),
            title: "Reverse shell".into(),
            severity: "critical".into(),
            rule_source: "builtin".into(),
            mitre: vec!["T1059".into()],
            tags: vec!["T1059".into(), "shell".into()],
            evidence: "shell sh connected to 198.18.0.9:4444\n\"quoted\"".into(),
            source_table: Some("net".into()),
            event_time: Some(t + chrono::Duration::seconds(1)),
            ktime_ns: Some(42),
            pid: Some(7),
            comm: Some("sh".into()),
            container_id: Some("0123456789abcdef0123".into()),
            container_name: Some("web".into()),
            image: Some("busybox".into()),
            fields: Some(
                r#"{"proc.exepath": "/bin/sh", "proc.cmdline": "sh -i", "proc.pid": 999}"#.into(),
            ),
        }
    }

    #[test]
    fn falco_json_has_falcos_fields_and_one_line() {
        let a = alert();
        let line = format(AlertFormat::Falco, "h1", &a);
        assert!(!line.contains('\n'), "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2026-11-01T10:00:01.500123000Z");
        assert_eq!(v["rule"], "Reverse shell");
        assert_eq!(v["priority"], "Critical");
        assert_eq!(v["source"], "syscall");
        assert_eq!(v["hostname"], "h1");
        assert_eq!(v["tags"], json!(["T1059", "shell"]));
        let f = &v["output_fields"];
        assert_eq!(f["container.id"], "0123456789abcdef0123");
        assert_eq!(f["container.name"], "web");
        assert_eq!(f["container.image.repository"], "busybox");
        // The alert's pid wins over an extra field of the same name.
        assert_eq!(f["proc.pid"], 7);
        assert_eq!(f["proc.exepath"], "/bin/sh");
        assert_eq!(f["quarry.source_table"], "net");
        assert_eq!(f["quarry.ktime_ns"], 42);
        assert_eq!(f["evt.time"], 1_793_527_201_000_000_000i64);
        let output = v["output"].as_str().unwrap();
        assert!(
            output.starts_with("10:00:01.500123000 Critical: Reverse shell (shell sh"),
            "{output}"
        );
        assert!(
            output.contains("container=0123456789ab pid=7 comm=sh"),
            "{output}"
        );
        assert_eq!(falco_priority("high"), "Error");
        assert_eq!(falco_priority("info"), "Informational");
    }

    #[test]
    fn ocsf_detection_finding_carries_container_and_process() {
        let a = alert();
        let line = format(AlertFormat::Ocsf, "h1", &a);
        assert!(!line.contains('\n'), "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["class_uid"], 2004);
        assert_eq!(v["category_uid"], 2);
        assert_eq!(v["type_uid"], 200401);
        assert_eq!(v["severity_id"], 5);
        assert_eq!(v["time"], 1_793_527_201_500i64);
        assert_eq!(v["device"]["hostname"], "h1");
        let info = &v["finding_info"];
        assert_eq!(info["uid"], a.alert_id.as_str());
        assert_eq!(info["analytic"]["uid"], "QH003");
        assert_eq!(info["attacks"][0]["technique"]["uid"], "T1059");
        let e = &v["evidences"][0];
        assert_eq!(e["container"]["uid"], "0123456789abcdef0123");
        assert_eq!(e["container"]["image"]["name"], "busybox");
        assert_eq!(e["process"]["pid"], 7);
        assert_eq!(e["process"]["file"]["path"], "/bin/sh");
        assert_eq!(e["process"]["cmd_line"], "sh -i");
        assert_eq!(e["data"]["ktime_ns"], 42);
        assert_eq!(v["message"], a.evidence.as_str());
    }

    #[test]
    fn alert_ids_are_stable_and_distinct() {
        let a = alert_id("R", "h", Some("net"), Some(1), Some(2));
        assert_eq!(a, alert_id("R", "h", Some("net"), Some(1), Some(2)));
        assert_eq!(a.len(), 24);
        assert_ne!(a, alert_id("R", "h", Some("net"), Some(12), None));
        assert_ne!(
            alert_id("ab", "c", None, None, None),
            alert_id("a", "bc", None, None, None)
        );
    }

    #[test]
    fn a_host_alert_without_a_row_still_formats() {
        let a = AlertRow {
            time: Utc.with_ymd_and_hms(2026, 11, 1, 10, 0, 0).unwrap(),
            alert_id: "x".into(),
            rule: "lost-events".into(),
            title: "Events lost".into(),
            severity: "high".into(),
            rule_source: "recorder".into(),
            evidence: "1200 records lost on CPU 1".into(),
            fields: Some("not json".into()),
            ..Default::default()
        };
        let f: Value = serde_json::from_str(&format(AlertFormat::Falco, "h", &a)).unwrap();
        assert!(
            f["output"]
                .as_str()
                .unwrap()
                .contains("container=host pid=- comm=-")
        );
        assert_eq!(f["output_fields"]["quarry.fields"], "not json");
        let o: Value = serde_json::from_str(&format(AlertFormat::Ocsf, "h", &a)).unwrap();
        assert!(o["evidences"][0].get("container").is_none());
        assert_eq!(o["severity_id"], 4);
    }
}
