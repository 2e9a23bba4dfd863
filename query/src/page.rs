//! A container's timeline as `quarry timeline` writes it: text for a terminal, one JSON
//! document, or the responder's HTML page, which marks what the built-in rules find in the same
//! window ([`crate::report`], rendered by [`crate::html`]).
//!
//! It only chooses among those three: the story is [`crate::timeline`]'s, the words and the
//! page are theirs. It returns the document and writes nowhere.

use chrono::{DateTime, Utc};

use crate::report::Report;
use crate::timeline::{Request, Timeline};
use crate::{Catalog, QueryError, Result, hunt};

/// The forms of a timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Text,
    Json,
    Html,
}

/// What `quarry timeline` is asked for: the container of the alert `around` (from
/// [`crate::timeline::AROUND`] before its row to as long after), else `container`; `since`
/// and `until` override either end.
pub async fn request(
    catalog: &mut Catalog,
    around: Option<&str>,
    container: Option<&str>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<Request> {
    match around {
        Some(id) => Request::around_alert(catalog, id, since, until).await,
        None => Ok(Request {
            container: container.unwrap_or_default().to_string(),
            since,
            until,
        }),
    }
}

/// The timeline `request` asks for, as `form`.
pub async fn render(catalog: &mut Catalog, request: &Request, form: Form) -> Result<String> {
    let built = |source| QueryError::Timeline {
        container: request.container.clone(),
        source: Box::new(source),
    };
    Ok(match form {
        Form::Text => Timeline::build(catalog, request)
            .await
            .map_err(built)?
            .to_text(),
        Form::Json => {
            let timeline = Timeline::build(catalog, request).await.map_err(built)?;
            let mut json = serde_json::to_string_pretty(&timeline)?;
            json.push('\n');
            json
        }
        Form::Html => {
            let report = Report::build(catalog, request, &hunt::builtin_rules())
                .await
                .map_err(built)?;
            crate::html::render(&report, &crate::html::generated_now())
        }
    })
}
