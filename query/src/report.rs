//! A responder's report of one container: its timeline with the findings of the hunt's rules in
//! the same window beside it.
//!
//! This module only puts the two together: the story comes from [`crate::timeline`], the
//! findings from [`crate::hunt`] (the same rules and the same statement as `quarry hunt
//! --container`), and [`crate::html`] renders the result. It must not run SQL of its own.

use serde::Serialize;

use crate::hunt::{self, Finding, Rule, Scope};
use crate::timeline::{Request, Timeline};
use crate::{Catalog, Result};

/// At most this many findings are kept in a report; the rest are counted
/// ([`Report::findings_left_out`]) and `quarry hunt --container` lists them all.
pub const MAX_FINDINGS: usize = 5_000;

/// A container's timeline and the rules' findings on it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub timeline: Timeline,
    /// In time order, at most [`MAX_FINDINGS`].
    pub findings: Vec<Finding>,
    /// Findings beyond [`MAX_FINDINGS`], not in `findings`.
    pub findings_left_out: u64,
}

impl Report {
    /// The timeline of `request` and the findings of `rules` on its container, inside the
    /// timeline's window.
    pub async fn build(catalog: &mut Catalog, request: &Request, rules: &[Rule]) -> Result<Report> {
        let timeline = Timeline::build(catalog, request).await?;
        let scope = Scope {
            since: timeline.since,
            // The timeline keeps a second of slack after the container's last sealed interval.
            until: timeline.until.map(|u| u + chrono::Duration::seconds(1)),
            containers: Some(vec![timeline.container.id.clone()]),
        };
        let mut findings = Vec::new();
        let mut findings_left_out = 0;
        hunt::run_each(catalog, rules, &scope, |f| {
            if findings.len() < MAX_FINDINGS {
                findings.push(f);
            } else {
                findings_left_out += 1;
            }
            Ok(())
        })
        .await?;
        Ok(Report {
            timeline,
            findings,
            findings_left_out,
        })
    }
}
