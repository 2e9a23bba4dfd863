//! Indicators from STIX 2 JSON: the `indicator` objects of a bundle whose STIX patterns say
//! "this value, or that one".
//!
//! A pattern is hunted only when it means exactly what a list of indicators means: one or
//! more observations joined by `OR`, each one or more `=` comparisons joined by `OR`, on an
//! object path something recorded holds: `file:hashes.'SHA-256'` (executables' hashes),
//! `ipv4-addr:value` and `ipv6-addr:value` (remote addresses), `domain-name:value` (read,
//! cannot match, as in a plain list). Anything else that is valid STIX (`AND`, `MATCHES`,
//! `LIKE`, `!=`, qualifiers such as `WITHIN`, other object types, other pattern languages,
//! revoked indicators) is skipped and named, because hunting for one part of an `AND` would
//! raise findings the indicator does not claim. A file that is not JSON, a pattern that does
//! not tokenize, or a value that is not of its type (a hash that is not 64 hex digits) is an
//! error naming the indicator and its line: a feed with a typo must not hunt for less than it
//! says.

use serde_json::Value;

use super::{IocList, MAX_INDICATORS};

/// Parses STIX 2 JSON; an error is the (1-based) line and the problem.
pub(super) fn parse(text: &str) -> Result<IocList, (usize, String)> {
    let json: Value =
        serde_json::from_str(text).map_err(|e| (e.line(), format!("not STIX JSON: {e}")))?;
    let objects: Vec<&Value> = match &json {
        Value::Array(items) => items.iter().collect(),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("bundle") => o
            .get("objects")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .ok_or((1, "a STIX bundle without an \"objects\" array".to_string()))?,
        Value::Object(_) => vec![&json],
        _ => {
            return Err((
                1,
                "STIX JSON must be a bundle, an object or an array".into(),
            ));
        }
    };
    let mut list = IocList::default();
    for object in objects {
        if object.get("type").and_then(Value::as_str) != Some("indicator") {
            continue;
        }
        let id = object
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("(indicator without an id)");
        let line = line_of(text, id);
        let at = |problem: String| (line, format!("indicator {id}: {problem}"));
        if object.get("revoked").and_then(Value::as_bool) == Some(true) {
            list.skipped.push(format!("{id}: revoked"));
            continue;
        }
        let language = object
            .get("pattern_type")
            .and_then(Value::as_str)
            .unwrap_or("stix");
        if language != "stix" {
            list.skipped
                .push(format!("{id}: a {language} pattern, not a STIX one"));
            continue;
        }
        let pattern = object
            .get("pattern")
            .and_then(Value::as_str)
            .ok_or_else(|| at("no \"pattern\"".into()))?;
        let tokens = tokenize(pattern).map_err(at)?;
        match values(&tokens) {
            Ok(values) => {
                for (kind, value) in values {
                    list.add(&format!("{kind}:{value}")).map_err(at)?;
                }
            }
            Err(construct) => list.skipped.push(format!("{id}: {construct}")),
        }
        if list.len() > MAX_INDICATORS {
            return Err(at(format!("more than {MAX_INDICATORS} indicators")));
        }
    }
    Ok(list)
}

/// The line of the first mention of `id` in the text (1 when it is not found).
fn line_of(text: &str, id: &str) -> usize {
    text.find(&format!("\"{id}\""))
        .map(|at| text[..at].matches('\n').count() + 1)
        .unwrap_or(1)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    OpenGroup,
    CloseGroup,
    /// A quoted string literal, unescaped.
    Text(String),
    /// A comparison operator (`=`, `!=`, `<=`, ...).
    Operator(String),
    /// An object path, a keyword (`OR`, `AND`, `MATCHES`, `WITHIN`, ...) or another literal.
    Word(String),
}

fn tokenize(pattern: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    // A quoted run starting at `i` (quote `q`), with `\` escapes; returns its text and the
    // index after it.
    let quoted = |i: usize, q: char| -> Result<(String, usize), String> {
        let mut out = String::new();
        let mut j = i + 1;
        while j < chars.len() {
            match chars[j] {
                '\\' if j + 1 < chars.len() => {
                    out.push(chars[j + 1]);
                    j += 2;
                }
                c if c == q => return Ok((out, j + 1)),
                c => {
                    out.push(c);
                    j += 1;
                }
            }
        }
        Err(format!("an unterminated string in the pattern {pattern:?}"))
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '[' | ']' | '(' | ')' => {
                tokens.push(match c {
                    '[' => Token::Open,
                    ']' => Token::Close,
                    '(' => Token::OpenGroup,
                    _ => Token::CloseGroup,
                });
                i += 1;
            }
            '\'' => {
                let (text, next) = quoted(i, '\'')?;
                tokens.push(Token::Text(text));
                i = next;
            }
            '=' | '!' | '<' | '>' => {
                let start = i;
                while i < chars.len() && matches!(chars[i], '=' | '!' | '<' | '>') {
                    i += 1;
                }
                tokens.push(Token::Operator(chars[start..i].iter().collect()));
            }
            _ => {
                // A word; an object path may quote a part (`hashes.'SHA-256'`).
                let mut word = String::new();
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !matches!(chars[i], '[' | ']' | '(' | ')' | '=' | '!' | '<' | '>')
                {
                    if matches!(chars[i], '\'' | '"') && word.ends_with('.') {
                        let (part, next) = quoted(i, chars[i])?;
                        word.push_str(&part);
                        i = next;
                    } else {
                        word.push(chars[i]);
                        i += 1;
                    }
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

/// The (kind, value) pairs a pattern of OR-ed equality comparisons names, or the construct
/// that keeps it from being a plain list.
fn values(tokens: &[Token]) -> Result<Vec<(&'static str, String)>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    let keyword = |t: &Token, k: &str| matches!(t, Token::Word(w) if w.eq_ignore_ascii_case(k));
    loop {
        if tokens.get(i) != Some(&Token::Open) {
            return Err(describe(tokens.get(i)));
        }
        i += 1;
        loop {
            let (Some(Token::Word(path)), Some(Token::Operator(op))) =
                (tokens.get(i), tokens.get(i + 1))
            else {
                return Err(describe(tokens.get(i + 1).or(tokens.get(i))));
            };
            if op != "=" {
                return Err(format!("the comparison {op}"));
            }
            let Some(Token::Text(value)) = tokens.get(i + 2) else {
                return Err(describe(tokens.get(i + 2)));
            };
            out.push((kind_of(path)?, value.clone()));
            i += 3;
            match tokens.get(i) {
                Some(t) if keyword(t, "OR") => i += 1,
                Some(Token::Close) => {
                    i += 1;
                    break;
                }
                other => return Err(describe(other)),
            }
        }
        match tokens.get(i) {
            None => return Ok(out),
            Some(t) if keyword(t, "OR") => i += 1,
            other => return Err(describe(other)),
        }
    }
}

/// What a list of indicators calls the values of a STIX object path.
fn kind_of(path: &str) -> Result<&'static str, String> {
    let (object, property) = path.split_once(':').unwrap_or((path, ""));
    let object = object.to_ascii_lowercase();
    let property = property.to_ascii_uppercase().replace(['-', '_'], "");
    match (object.as_str(), property.as_str()) {
        ("file", "HASHES.SHA256") => Ok("sha256"),
        ("ipv4-addr" | "ipv6-addr", "VALUE") => Ok("ip"),
        ("domain-name", "VALUE") => Ok("domain"),
        _ => Err(format!(
            "the object path {path} (nothing recorded holds it)"
        )),
    }
}

fn describe(token: Option<&Token>) -> String {
    match token {
        None => "a pattern that ends early".into(),
        Some(Token::Word(w)) => w.clone(),
        Some(Token::Operator(o)) => format!("the comparison {o}"),
        Some(Token::Text(t)) => format!("the literal {t:?} out of place"),
        Some(Token::OpenGroup | Token::CloseGroup) => "parenthesised observations".into(),
        Some(Token::Open | Token::Close) => "a bracket out of place".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn bundle(indicators: &[(&str, &str)]) -> String {
        let objects: Vec<String> = indicators
            .iter()
            .map(|(id, pattern)| {
                format!(
                    "{{\"type\": \"indicator\", \"spec_version\": \"2.1\", \"id\": \"{id}\",\n \
                     \"pattern_type\": \"stix\", \"pattern\": {}}}",
                    serde_json::to_string(pattern).unwrap_or_default()
                )
            })
            .collect();
        format!(
            "{{\"type\": \"bundle\", \"id\": \"bundle--1\", \"objects\": [\n{},\n\
             {{\"type\": \"malware\", \"id\": \"malware--1\", \"name\": \"x\"}}]}}",
            objects.join(",\n")
        )
    }

    #[test]
    fn or_ed_equalities_become_indicators() {
        let text = bundle(&[
            (
                "indicator--a",
                &format!("[file:hashes.'SHA-256' = '{}']", HASH.to_uppercase()),
            ),
            (
                "indicator--b",
                "[ipv4-addr:value = '198.51.100.7' OR ipv4-addr:value = '203.0.113.0/24'] \
                 OR [ipv6-addr:value = '2001:db8::1']",
            ),
            ("indicator--c", "[domain-name:value = 'evil.example.com']"),
            ("indicator--d", &format!("[file:hashes.SHA256 = '{HASH}']")),
        ]);
        let list = parse(&text).unwrap();
        assert_eq!(list.sha256, vec![HASH, HASH]);
        assert_eq!(
            list.networks,
            vec!["198.51.100.7/32", "203.0.113.0/24", "2001:db8::1/128"]
        );
        assert_eq!(list.domains, vec!["evil.example.com"]);
        assert!(list.skipped.is_empty(), "{:?}", list.skipped);
    }

    #[test]
    fn what_a_list_cannot_say_is_skipped_and_named() {
        let text = bundle(&[
            (
                "indicator--and",
                &format!("[file:hashes.'SHA-256' = '{HASH}' AND file:name = 'x']"),
            ),
            ("indicator--url", "[url:value = 'http://example.com/x']"),
            ("indicator--re", "[domain-name:value MATCHES '^evil']"),
            (
                "indicator--within",
                "[ipv4-addr:value = '198.51.100.7'] WITHIN 300 SECONDS",
            ),
            ("indicator--ne", "[ipv4-addr:value != '198.51.100.7']"),
        ]);
        let list = parse(&text).unwrap();
        assert!(list.is_empty(), "{list:?}");
        let skipped = list.skipped.join("\n");
        for what in ["--and: AND", "url:value", "MATCHES", "WITHIN", "!="] {
            assert!(skipped.contains(what), "{what} not named in {skipped}");
        }
        assert!(
            list.unmatchable()
                .unwrap()
                .contains("5 STIX indicator(s) skipped")
        );
    }

    #[test]
    fn a_malformed_feed_is_refused_with_the_indicator_and_its_line() {
        let text = bundle(&[
            ("indicator--ok", "[ipv4-addr:value = '198.51.100.7']"),
            ("indicator--bad", "[file:hashes.'SHA-256' = 'abcd']"),
        ]);
        let (line, problem) = parse(&text).unwrap_err();
        assert_eq!(line, 4, "{problem}");
        assert!(problem.contains("indicator--bad"), "{problem}");
        let (_, problem) =
            parse(&bundle(&[("indicator--q", "[ipv4-addr:value = '1.2.3.4")])).unwrap_err();
        assert!(problem.contains("unterminated"), "{problem}");
        let (line, problem) = parse("{\"type\": \"bundle\",\n \"objects\": [}").unwrap_err();
        assert_eq!(line, 2, "{problem}");
    }

    #[test]
    fn revoked_and_foreign_patterns_are_skipped() {
        let text = "[{\"type\": \"indicator\", \"id\": \"indicator--r\", \"revoked\": true, \
                    \"pattern\": \"[ipv4-addr:value = '198.51.100.7']\"},\
                    {\"type\": \"indicator\", \"id\": \"indicator--s\", \"pattern_type\": \"snort\", \
                    \"pattern\": \"alert tcp any any\"}]";
        let list = parse(text).unwrap();
        assert!(list.is_empty());
        assert_eq!(list.skipped.len(), 2, "{:?}", list.skipped);
    }
}
