//! Reading a Sigma rule's YAML into the [model](super::model), refusing what Quarry does not
//! support at the line where it stands.
//!
//! Rule files are hostile input: nothing here evaluates or expands anything a rule says.
//! YAML aliases are refused (no expansion, so no alias bombs), files are size-limited by the
//! loader, and every name and value is kept as data for the converter to map or quote.

use saphyr::{LoadableYamlNode, MarkedYamlOwned, ScalarOwned, ScalarStyle, YamlDataOwned};

use super::Problem;
use super::model::{
    Category, Compare, Condition, FieldTest, Modifiers, Position, RegexFlags, Search, SigmaRule,
    Value,
};
use crate::hunt::Severity;

/// A problem found at a line, before the rule's id may be known.
pub type Located = (usize, Problem);

fn unsupported(line: usize, construct: impl Into<String>, reason: impl Into<String>) -> Located {
    (
        line,
        Problem::Unsupported {
            construct: construct.into(),
            reason: reason.into(),
        },
    )
}

fn malformed(line: usize, problem: impl Into<String>) -> Located {
    (line, Problem::Malformed(problem.into()))
}

/// One YAML document of a rule file: its id (when it has one) and the rule or the problem.
pub struct Document {
    pub id: Option<String>,
    pub line: usize,
    pub rule: Result<SigmaRule, Located>,
}

/// Reads every YAML document in `text`. A YAML syntax error fails the whole file (its line
/// is in the error).
pub fn documents(text: &str) -> Result<Vec<Document>, Located> {
    let docs = MarkedYamlOwned::load_from_str(text)
        .map_err(|e| malformed(e.marker().line(), format!("not valid YAML: {}", e.info())))?;
    Ok(docs
        .iter()
        .filter(|d| !matches!(d.data, YamlDataOwned::Value(ScalarOwned::Null)))
        .map(|doc| {
            let line = doc.span.start.line();
            let id = mapping(doc)
                .ok()
                .and_then(|m| get(m, "id"))
                .and_then(|v| text_of(v).ok());
            Document {
                id,
                line,
                rule: rule(doc),
            }
        })
        .collect())
}

type Map = saphyr::AnnotatedMappingOwned<MarkedYamlOwned>;

fn line_of(node: &MarkedYamlOwned) -> usize {
    node.span.start.line()
}

fn mapping(node: &MarkedYamlOwned) -> Result<&Map, Located> {
    match &node.data {
        YamlDataOwned::Mapping(m) => Ok(m),
        YamlDataOwned::Alias(_) => Err(alias(node)),
        _ => Err(malformed(
            line_of(node),
            "expected a mapping (`key: value` lines)",
        )),
    }
}

fn alias(node: &MarkedYamlOwned) -> Located {
    unsupported(
        line_of(node),
        "YAML alias",
        "write the value out; aliases are not expanded",
    )
}

fn get<'a>(map: &'a Map, key: &str) -> Option<&'a MarkedYamlOwned> {
    map.iter()
        .find(|(k, _)| scalar(k).is_some_and(|s| matches!(s, ScalarOwned::String(t) if t == key)))
        .map(|(_, v)| v)
}

/// A scalar node's value; a representation the loader left unresolved is resolved here
/// (quoted: a string).
fn scalar(node: &MarkedYamlOwned) -> Option<ScalarOwned> {
    match &node.data {
        YamlDataOwned::Value(v) => Some(v.clone()),
        YamlDataOwned::Representation(text, style, _) => Some(match style {
            ScalarStyle::Plain => ScalarOwned::parse_from_cow(text.as_str().into()),
            _ => ScalarOwned::String(text.clone()),
        }),
        _ => None,
    }
}

fn text_of(node: &MarkedYamlOwned) -> Result<String, Located> {
    match scalar(node) {
        Some(ScalarOwned::String(s)) => Ok(s),
        Some(ScalarOwned::Integer(i)) => Ok(i.to_string()),
        Some(ScalarOwned::Boolean(b)) => Ok(b.to_string()),
        _ if matches!(node.data, YamlDataOwned::Alias(_)) => Err(alias(node)),
        _ => Err(malformed(line_of(node), "expected a text value")),
    }
}

fn required<'a>(map: &'a Map, doc_line: usize, key: &str) -> Result<&'a MarkedYamlOwned, Located> {
    get(map, key).ok_or_else(|| malformed(doc_line, format!("the rule has no `{key}`")))
}

fn rule(doc: &MarkedYamlOwned) -> Result<SigmaRule, Located> {
    let map = mapping(doc)?;
    let line = line_of(doc);
    if let Some(action) = get(map, "action") {
        return Err(unsupported(
            line_of(action),
            "`action` (rule collection)",
            "give each rule as a whole document of its own",
        ));
    }
    let id = text_of(required(map, line, "id")?)?;
    let title = text_of(required(map, line, "title")?)?;
    let description = get(map, "description")
        .map(text_of)
        .transpose()?
        .unwrap_or_default();
    let severity = match get(map, "level") {
        // Sigma makes the level optional; a rule without one is not more or less urgent
        // than the middle.
        None => Severity::Medium,
        Some(node) => match text_of(node)?.as_str() {
            "informational" => Severity::Info,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            other => {
                return Err(malformed(
                    line_of(node),
                    format!("level {other:?}: give informational, low, medium, high or critical"),
                ));
            }
        },
    };
    let tags = match get(map, "tags") {
        None => Vec::new(),
        Some(node) => match &node.data {
            YamlDataOwned::Sequence(items) => {
                items.iter().map(text_of).collect::<Result<Vec<_>, _>>()?
            }
            _ => return Err(malformed(line_of(node), "tags must be a list")),
        },
    };
    let category = logsource(required(map, line, "logsource")?)?;
    let detection = required(map, line, "detection")?;
    let (searches, (condition, condition_line)) = detection_of(detection)?;
    Ok(SigmaRule {
        id,
        title,
        description,
        severity,
        tags,
        category,
        searches,
        condition,
        condition_line,
        line,
    })
}

fn logsource(node: &MarkedYamlOwned) -> Result<Category, Located> {
    let map = mapping(node)?;
    let line = line_of(node);
    match get(map, "product").map(text_of).transpose()? {
        Some(p) if p == "linux" => {}
        Some(p) => {
            return Err(unsupported(
                line,
                format!("logsource product {p:?}"),
                "Quarry records Linux hosts: product must be linux",
            ));
        }
        None => {
            return Err(unsupported(
                line,
                "logsource without a product",
                "Quarry records Linux hosts: give product: linux",
            ));
        }
    }
    if let Some(service) = get(map, "service") {
        return Err(unsupported(
            line_of(service),
            format!("logsource service {:?}", text_of(service)?),
            "Quarry does not collect service logs; use a category",
        ));
    }
    let node = get(map, "category").ok_or_else(|| {
        unsupported(
            line,
            "logsource without a category",
            "give process_creation, file_event, file_access or network_connection",
        )
    })?;
    let text = text_of(node)?;
    Category::parse(&text).ok_or_else(|| {
        unsupported(
            line_of(node),
            format!("logsource category {text:?}"),
            "Quarry converts process_creation, file_event, file_access and network_connection",
        )
    })
}

fn detection_of(node: &MarkedYamlOwned) -> Result<(Vec<Search>, (Condition, usize)), Located> {
    let map = mapping(node)?;
    let mut searches = Vec::new();
    let mut condition = None;
    for (key, value) in map.iter() {
        let name = text_of(key)?;
        match name.as_str() {
            "condition" => condition = Some((condition_of(value)?, line_of(key))),
            "timeframe" => {
                return Err(unsupported(
                    line_of(key),
                    "timeframe",
                    "correlations over time are not converted; write the rule as SQL",
                ));
            }
            _ => searches.push(search(name, key, value)?),
        }
    }
    let condition =
        condition.ok_or_else(|| malformed(line_of(node), "the detection has no `condition`"))?;
    Ok((searches, condition))
}

fn search(name: String, key: &MarkedYamlOwned, value: &MarkedYamlOwned) -> Result<Search, Located> {
    let line = line_of(key);
    let keywords = || {
        unsupported(
            line,
            format!("keyword search {name:?}"),
            "a value without a field would search every column; name the field it is in",
        )
    };
    let alternatives = match &value.data {
        YamlDataOwned::Mapping(m) => vec![tests(m, line)?],
        YamlDataOwned::Sequence(items) => {
            if items.is_empty() {
                return Err(malformed(line, format!("search {name:?} is an empty list")));
            }
            let mut alternatives = Vec::new();
            for item in items {
                match &item.data {
                    YamlDataOwned::Mapping(m) => alternatives.push(tests(m, line_of(item))?),
                    YamlDataOwned::Alias(_) => return Err(alias(item)),
                    _ => return Err(keywords()),
                }
            }
            alternatives
        }
        YamlDataOwned::Alias(_) => return Err(alias(value)),
        _ => return Err(keywords()),
    };
    Ok(Search {
        name,
        line,
        alternatives,
    })
}

fn tests(map: &Map, line: usize) -> Result<Vec<FieldTest>, Located> {
    let mut tests = Vec::new();
    for (key, value) in map.iter() {
        let line = line_of(key);
        let text = text_of(key)?;
        let mut parts = text.split('|');
        let field = parts.next().unwrap_or_default().to_string();
        if field.is_empty() {
            return Err(unsupported(
                line,
                format!("keyword search {text:?}"),
                "a value without a field would search every column; name the field it is in",
            ));
        }
        let modifiers = modifiers(line, parts)?;
        let values = match &value.data {
            YamlDataOwned::Sequence(items) => {
                if items.is_empty() {
                    return Err(malformed(line, format!("{text}: an empty list of values")));
                }
                items.iter().map(value_of).collect::<Result<Vec<_>, _>>()?
            }
            _ => vec![value_of(value)?],
        };
        tests.push(FieldTest {
            field,
            line,
            modifiers,
            values,
        });
    }
    if tests.is_empty() {
        return Err(malformed(line, "a search with no fields"));
    }
    Ok(tests)
}

fn value_of(node: &MarkedYamlOwned) -> Result<Value, Located> {
    match scalar(node) {
        Some(ScalarOwned::String(s)) => Ok(Value::Text(s)),
        Some(ScalarOwned::Integer(i)) => Ok(Value::Int(i)),
        Some(ScalarOwned::Boolean(b)) => Ok(Value::Bool(b)),
        Some(ScalarOwned::Null) => Ok(Value::Null),
        Some(ScalarOwned::FloatingPoint(_)) => Err(unsupported(
            line_of(node),
            "a fractional number",
            "quote the value to match it as text",
        )),
        None if matches!(node.data, YamlDataOwned::Alias(_)) => Err(alias(node)),
        None => Err(malformed(
            line_of(node),
            "a value must be text, a number, true/false or null (or a list of them)",
        )),
    }
}

fn modifiers<'a>(line: usize, names: impl Iterator<Item = &'a str>) -> Result<Modifiers, Located> {
    let mut m = Modifiers::default();
    let conflict = |a: &str| {
        unsupported(
            line,
            format!("modifier {a} with another match modifier"),
            "use one of contains, startswith, endswith, re, cidr, exists, lt/lte/gt/gte",
        )
    };
    let mut matchers = 0;
    for name in names {
        match name {
            "contains" => m.position = Position::Contains,
            "startswith" => m.position = Position::StartsWith,
            "endswith" => m.position = Position::EndsWith,
            "all" => m.all = true,
            "cased" => m.cased = true,
            "windash" => m.windash = true,
            "re" => m.regex = Some(RegexFlags::default()),
            "i" | "m" | "s" => {
                let Some(flags) = m.regex.as_mut() else {
                    return Err(unsupported(
                        line,
                        format!("modifier {name}"),
                        "i, m and s qualify re and must follow it",
                    ));
                };
                match name {
                    "i" => flags.insensitive = true,
                    "m" => flags.multiline = true,
                    _ => flags.dot_all = true,
                }
                continue;
            }
            "cidr" => m.cidr = true,
            "exists" => m.exists = true,
            "lt" => m.compare = Some(Compare::Lt),
            "lte" => m.compare = Some(Compare::Lte),
            "gt" => m.compare = Some(Compare::Gt),
            "gte" => m.compare = Some(Compare::Gte),
            "base64" | "base64offset" | "wide" | "utf16" | "utf16le" | "utf16be" => {
                return Err(unsupported(
                    line,
                    format!("modifier {name}"),
                    "encoded forms of a value appear in Windows logs, not in recorded \
                     Linux command lines and paths",
                ));
            }
            "expand" => {
                return Err(unsupported(
                    line,
                    "modifier expand",
                    "placeholders need a mapping of their own; write the values out",
                ));
            }
            "fieldref" => {
                return Err(unsupported(
                    line,
                    "modifier fieldref",
                    "comparing two fields is not converted; write the rule as SQL",
                ));
            }
            other => {
                return Err(unsupported(
                    line,
                    format!("modifier {other:?}"),
                    "Quarry knows contains, startswith, endswith, all, cased, windash, \
                     re (with i, m, s), cidr, exists, lt, lte, gt, gte",
                ));
            }
        }
        if !matches!(name, "all" | "cased" | "windash") {
            matchers += 1;
            if matchers > 1 {
                return Err(conflict(name));
            }
        }
    }
    Ok(m)
}

// ---- conditions ----------------------------------------------------------------------------

fn condition_of(node: &MarkedYamlOwned) -> Result<Condition, Located> {
    let line = line_of(node);
    match &node.data {
        // A list of conditions: any of them (Sigma's older form).
        YamlDataOwned::Sequence(items) if !items.is_empty() => Ok(Condition::Or(
            items
                .iter()
                .map(|i| parse_condition(line_of(i), &text_of(i)?))
                .collect::<Result<Vec<_>, _>>()?,
        )),
        _ => parse_condition(line, &text_of(node)?),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Word(String),
}

fn tokens(line: usize, text: &str) -> Result<Vec<Token>, Located> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Token>| {
        if !word.is_empty() {
            out.push(Token::Word(std::mem::take(word)));
        }
    };
    for c in text.chars() {
        match c {
            '(' | ')' => {
                flush(&mut word, &mut out);
                out.push(if c == '(' { Token::Open } else { Token::Close });
            }
            '|' => {
                return Err(unsupported(
                    line,
                    "aggregation (`| count() ...`) in the condition",
                    "aggregations are not converted; write the rule as SQL",
                ));
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            c if c.is_alphanumeric() || matches!(c, '_' | '*' | '-' | '.') => word.push(c),
            other => {
                return Err(malformed(
                    line,
                    format!("condition: unexpected character {other:?}"),
                ));
            }
        }
    }
    flush(&mut word, &mut out);
    Ok(out)
}

/// Parses a condition: `not` binds tightest, then `and`, then `or`.
pub fn parse_condition(line: usize, text: &str) -> Result<Condition, Located> {
    let tokens = tokens(line, text)?;
    let mut p = Parser {
        tokens,
        at: 0,
        line,
        depth: 0,
    };
    let c = p.or()?;
    if p.at != p.tokens.len() {
        return Err(malformed(
            line,
            format!("condition: unexpected {:?}", p.describe(p.at)),
        ));
    }
    Ok(c)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    line: usize,
    depth: usize,
}

/// Deeper nesting than any real rule needs; the limit keeps a hostile condition from
/// exhausting the stack.
const MAX_DEPTH: usize = 64;

impl Parser {
    fn word(&self, i: usize) -> Option<&str> {
        match self.tokens.get(i) {
            Some(Token::Word(w)) => Some(w),
            _ => None,
        }
    }

    fn keyword(&self, i: usize, k: &str) -> bool {
        self.word(i).is_some_and(|w| w.eq_ignore_ascii_case(k))
    }

    fn describe(&self, i: usize) -> String {
        match self.tokens.get(i) {
            None => "end of condition".into(),
            Some(Token::Open) => "(".into(),
            Some(Token::Close) => ")".into(),
            Some(Token::Word(w)) => w.clone(),
        }
    }

    fn or(&mut self) -> Result<Condition, Located> {
        let mut parts = vec![self.and()?];
        while self.keyword(self.at, "or") {
            self.at += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Condition::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Condition, Located> {
        let mut parts = vec![self.unary()?];
        while self.keyword(self.at, "and") {
            self.at += 1;
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Condition::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Condition, Located> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(malformed(self.line, "condition: nested too deeply"));
        }
        let result = if self.keyword(self.at, "not") {
            self.at += 1;
            self.unary().map(|c| Condition::Not(Box::new(c)))
        } else {
            self.primary()
        };
        self.depth -= 1;
        result
    }

    fn primary(&mut self) -> Result<Condition, Located> {
        let line = self.line;
        match self.tokens.get(self.at).cloned() {
            Some(Token::Open) => {
                self.at += 1;
                let c = self.or()?;
                if self.tokens.get(self.at) != Some(&Token::Close) {
                    return Err(malformed(
                        line,
                        format!("condition: expected ) before {}", self.describe(self.at)),
                    ));
                }
                self.at += 1;
                Ok(c)
            }
            Some(Token::Word(w)) if self.keyword(self.at + 1, "of") => {
                let quantifier = w.to_ascii_lowercase();
                let target = self.word(self.at + 2).map(str::to_string).ok_or_else(|| {
                    malformed(line, format!("condition: `{w} of` names no searches"))
                })?;
                self.at += 3;
                match quantifier.as_str() {
                    "1" | "any" => Ok(Condition::OneOf(target)),
                    "all" => Ok(Condition::AllOf(target)),
                    other => Err(unsupported(
                        line,
                        format!("`{other} of` in the condition"),
                        "use `1 of` or `all of`",
                    )),
                }
            }
            Some(Token::Word(w))
                if !["and", "or", "not", "of", "them"]
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k)) =>
            {
                self.at += 1;
                Ok(Condition::Search(w))
            }
            _ => Err(malformed(
                line,
                format!(
                    "condition: expected a search name, `not`, `1 of`, `all of` or ( at {}",
                    self.describe(self.at)
                ),
            )),
        }
    }
}
