//! Indicators of compromise (`quarry hunt --ioc FILE`): a plain list read into one hunt rule.
//!
//! The file holds one indicator a line; `#` starts a comment (a whole line, or after the
//! indicator and a space); blank lines are skipped. Each indicator is an executable's SHA-256
//! (64 hex digits), an absolute path, an IPv4/IPv6 address or CIDR network, or a domain name;
//! a `sha256:`, `path:`, `ip:` or `domain:` prefix says which when the form alone would not.
//! A line that is none of these is an error naming the file and the line number: a list with
//! a typo must not silently hunt for less than it says.
//!
//! The list becomes an ordinary [`Rule`] (`IOC001`), so its findings are merged, filtered and
//! printed like every other rule's: hashes against exec rows' `exe_sha256` (the `execs` view,
//! which joins in hashes written late), paths against executed files and file rows (the path
//! given and the kernel's path), addresses against the remote side of network rows
//! (`cidr_match`). No recorded table holds domain names (no DNS is decoded), so domains are
//! read and counted but cannot match: [`IocList::unmatchable`] says so for the caller to print.
//!
//! A file whose text starts with `{` or `[` is read as STIX 2 JSON instead ([`stix`]): a
//! bundle (or a lone object, or an array of them) whose `indicator` objects carry STIX
//! patterns. Patterns that say "any of these values" become the same indicators; what cannot
//! be said as a plain list (`AND`, `MATCHES`, time qualifiers, object types nothing recorded
//! holds) is skipped, counted and named by [`IocList::unmatchable`], never widened.
//!
//! What this module must not do: read anything but the list, or build SQL from an indicator
//! it did not validate (every value is checked against its form and then quoted).

mod stix;

use std::net::IpAddr;
use std::path::Path;

use crate::hunt::{Rule, Severity};
use crate::timeline::sql_literal;
use crate::{QueryError, Result};

/// Most indicators one list may hold: the rule is one SQL statement.
pub const MAX_INDICATORS: usize = 100_000;

/// A parsed list of indicators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IocList {
    pub sha256: Vec<String>,
    pub paths: Vec<String>,
    /// Addresses and networks, as `cidr_match` reads them (an address is its /32 or /128).
    pub networks: Vec<String>,
    pub domains: Vec<String>,
    /// Indicators of a STIX file that cannot be hunted as a list, with the reason (the
    /// indicator's id and the construct).
    pub skipped: Vec<String>,
}

impl IocList {
    /// Reads and checks a list file.
    pub fn read(path: &Path) -> Result<IocList> {
        let text = std::fs::read_to_string(path).map_err(|e| QueryError::io(path, e))?;
        let parsed = if text.trim_start().starts_with(['{', '[']) {
            stix::parse(&text)
        } else {
            IocList::parse(&text)
        };
        parsed.map_err(|(line, problem)| QueryError::Ioc {
            path: path.display().to_string(),
            line,
            problem,
        })
    }

    /// Parses a list; an error is the (1-based) line number and what is wrong with it.
    pub fn parse(text: &str) -> std::result::Result<IocList, (usize, String)> {
        let mut list = IocList::default();
        for (n, raw) in text.lines().enumerate() {
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            let at = n + 1;
            list.add(line).map_err(|p| (at, p))?;
            if list.len() > MAX_INDICATORS {
                return Err((at, format!("more than {MAX_INDICATORS} indicators")));
            }
        }
        Ok(list)
    }

    pub fn len(&self) -> usize {
        self.sha256.len() + self.paths.len() + self.networks.len() + self.domains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Why some indicators cannot match anything recorded, if so.
    pub fn unmatchable(&self) -> Option<String> {
        let mut notes = Vec::new();
        if !self.domains.is_empty() {
            notes.push(format!(
                "{} domain indicator(s) read but not matched: the store records no domain names \
                 (no DNS decoding); match their addresses instead",
                self.domains.len()
            ));
        }
        if let Some(first) = self.skipped.first() {
            notes.push(format!(
                "{} STIX indicator(s) skipped, their patterns cannot be hunted as a list (first: \
                 {first})",
                self.skipped.len()
            ));
        }
        (!notes.is_empty()).then(|| notes.join("; "))
    }

    fn add(&mut self, line: &str) -> std::result::Result<(), String> {
        let (kind, value) = match line.split_once(':') {
            Some((k @ ("sha256" | "path" | "ip" | "domain"), v)) => (Some(k), v.trim()),
            _ => (None, line),
        };
        if value.chars().any(char::is_whitespace) {
            return Err(format!("{line:?}: one indicator a line (found a space)"));
        }
        let hash = value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit());
        let network = network(value);
        match kind {
            Some("sha256") | None if hash => self.sha256.push(value.to_ascii_lowercase()),
            Some("path") | None if value.starts_with('/') => {
                if value.contains('\0') {
                    return Err(format!("{line:?}: a NUL in a path"));
                }
                self.paths.push(value.to_string())
            }
            Some("ip") | None if network.is_some() => self.networks.extend(network),
            Some("domain") | None if is_domain(value) => self
                .domains
                .push(value.trim_end_matches('.').to_ascii_lowercase()),
            Some(k) => return Err(format!("{value:?} is not a valid {k} indicator")),
            None => {
                return Err(format!(
                    "{value:?} is not an indicator: give a SHA-256 (64 hex digits), an absolute \
                     path, an IP address or CIDR network, or a domain name"
                ));
            }
        }
        Ok(())
    }

    /// The list as one hunt rule.
    pub fn rule(&self, origin: &str) -> Rule {
        Rule {
            id: "IOC001".into(),
            title: "Indicator of compromise seen".into(),
            severity: Severity::High,
            mitre: vec!["T1588".into()],
            description: format!(
                "A recorded executable hash, path or remote address is on the indicator list \
                 {origin} ({} hashes, {} paths, {} networks).",
                self.sha256.len(),
                self.paths.len(),
                self.networks.len()
            ),
            sql: self.sql(),
            origin: origin.into(),
            fixture: None,
        }
    }

    fn sql(&self) -> String {
        let list = |v: &[String]| {
            v.iter()
                .map(|s| sql_literal(s))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        if !self.sha256.is_empty() {
            parts.push(format!(
                "SELECT time, host, container_id, pid, comm, 'process' AS source_table, ktime_ns,
       concat('executed ', coalesce(exe_path, filename), ' with SHA-256 ', exe_sha256,
              ' (on the indicator list)') AS evidence
FROM execs WHERE exe_sha256 IN ({})",
                list(&self.sha256)
            ));
        }
        if !self.paths.is_empty() {
            let paths = list(&self.paths);
            parts.push(format!(
                "SELECT time, host, container_id, pid, comm, 'process', ktime_ns,
       concat('executed ', coalesce(exe_path, filename), ' (path on the indicator list)')
FROM execs WHERE exe_path IN ({paths}) OR kernel_path IN ({paths}) OR filename IN ({paths})
UNION ALL
SELECT time, host, container_id, pid, comm, 'file', ktime_ns,
       concat(event, ' ', coalesce(abs_path, path), ' (path on the indicator list)')
FROM file WHERE abs_path IN ({paths}) OR kernel_path IN ({paths}) OR abs_path2 IN ({paths})"
            ));
        }
        if !self.networks.is_empty() {
            let any = self
                .networks
                .iter()
                .map(|n| format!("cidr_match(remote_addr, {})", sql_literal(n)))
                .collect::<Vec<_>>()
                .join(" OR ");
            parts.push(format!(
                "SELECT time, host, container_id, pid, comm, 'net', ktime_ns,
       concat(event, ' ', coalesce(protocol, family, ''), ' ', remote_addr, ':', remote_port,
              ' (address on the indicator list)')
FROM net WHERE remote_addr IS NOT NULL AND ({any})"
            ));
        }
        if parts.is_empty() {
            // Nothing matchable (only domains, or an empty list): a rule that finds nothing.
            parts.push(
                "SELECT time, host, container_id, pid, comm, 'process' AS source_table, ktime_ns,
       CAST(NULL AS VARCHAR) AS evidence FROM process WHERE false"
                    .into(),
            );
        }
        parts.join("\nUNION ALL\n")
    }
}

fn strip_comment(line: &str) -> &str {
    if line.trim_start().starts_with('#') {
        return "";
    }
    match line.find(" #").or_else(|| line.find("\t#")) {
        Some(i) => &line[..i],
        None => line,
    }
}

/// An address or CIDR network in the form `cidr_match` reads, or None.
fn network(value: &str) -> Option<String> {
    let (addr, bits) = match value.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
        None => (value, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then(|| format!("{ip}/{bits}"))
}

fn is_domain(value: &str) -> bool {
    let v = value.trim_end_matches('.');
    v.len() <= 253
        && v.contains('.')
        && v.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && !v
            .rsplit('.')
            .next()
            .unwrap_or("")
            .bytes()
            .all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";

    #[test]
    fn each_form_is_recognised_and_comments_are_skipped() {
        let text = format!(
            "# a list\n{HASH}\n/tmp/x  # dropper\n\n198.51.100.7\n2001:db8::/32\nEvil.Example.com\n\
             path:/opt/a#b\nip:10.0.0.0/8\n"
        );
        let l = IocList::parse(&text).unwrap();
        assert_eq!(l.sha256, vec![HASH.to_ascii_lowercase()]);
        assert_eq!(l.paths, vec!["/tmp/x", "/opt/a#b"]);
        assert_eq!(
            l.networks,
            vec!["198.51.100.7/32", "2001:db8::/32", "10.0.0.0/8"]
        );
        assert_eq!(l.domains, vec!["evil.example.com"]);
        assert!(l.unmatchable().unwrap().contains("1 domain"));
    }

    #[test]
    fn a_bad_line_is_named_by_its_number() {
        for (text, line) in [
            ("/ok\nnot an indicator\n", 2),
            ("# c\n\n10.0.0.0/33\n", 3),
            ("sha256:abcd\n", 1),
            ("1.2.3\n", 1),
        ] {
            let (at, problem) = IocList::parse(text).unwrap_err();
            assert_eq!(at, line, "{text:?}: {problem}");
        }
    }

    #[test]
    fn values_are_quoted_in_the_rule() {
        let l = IocList::parse("path:/tmp/it's\n").unwrap();
        assert!(l.rule("t").sql.contains("'/tmp/it''s'"));
    }
}
