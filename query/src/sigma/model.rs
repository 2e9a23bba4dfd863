//! A Sigma rule as Quarry understands it: only what the converter supports, each part with
//! the line it came from so a refusal can point at it.

use crate::hunt::Severity;

/// The log sources (`logsource: product: linux, category: ...`) Quarry converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    ProcessCreation,
    FileEvent,
    FileAccess,
    NetworkConnection,
}

impl Category {
    pub fn parse(text: &str) -> Option<Category> {
        Some(match text {
            "process_creation" => Category::ProcessCreation,
            "file_event" => Category::FileEvent,
            "file_access" => Category::FileAccess,
            "network_connection" => Category::NetworkConnection,
            _ => return None,
        })
    }
}

/// One rule.
#[derive(Debug, Clone)]
pub struct SigmaRule {
    pub id: String,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    pub tags: Vec<String>,
    pub category: Category,
    pub searches: Vec<Search>,
    pub condition: Condition,
    pub condition_line: usize,
    /// The line of the rule's first key (a file may hold several YAML documents).
    pub line: usize,
}

impl SigmaRule {
    /// The ATT&CK technique ids among the tags (`attack.t1059.004` is `T1059.004`).
    pub fn techniques(&self) -> Vec<String> {
        self.tags
            .iter()
            .filter_map(|t| t.strip_prefix("attack.t"))
            .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.'))
            .map(|t| format!("T{t}"))
            .collect()
    }
}

/// A named search of the detection: alternatives (a list of maps) of which one must hold;
/// each alternative is tests of which all must hold.
#[derive(Debug, Clone)]
pub struct Search {
    pub name: String,
    pub line: usize,
    pub alternatives: Vec<Vec<FieldTest>>,
}

/// `Field|modifier...: value or values`.
#[derive(Debug, Clone)]
pub struct FieldTest {
    pub field: String,
    pub line: usize,
    pub modifiers: Modifiers,
    pub values: Vec<Value>,
}

/// The modifiers Quarry supports; anything else is refused while parsing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modifiers {
    pub position: Position,
    /// Every value must match (default: any).
    pub all: bool,
    /// Case-sensitive matching (default: case-insensitive, as Sigma specifies).
    pub cased: bool,
    /// `-` and `/` at the start of a word also match the other dash forms.
    pub windash: bool,
    pub regex: Option<RegexFlags>,
    pub cidr: bool,
    /// `exists: true|false`.
    pub exists: bool,
    pub compare: Option<Compare>,
}

/// Where a text value must match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Position {
    #[default]
    Whole,
    Contains,
    StartsWith,
    EndsWith,
}

/// The sub-modifiers of `re`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegexFlags {
    pub insensitive: bool,
    pub multiline: bool,
    pub dot_all: bool,
}

/// `lt`, `lte`, `gt`, `gte`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    Lt,
    Lte,
    Gt,
    Gte,
}

impl Compare {
    pub fn operator(self) -> &'static str {
        match self {
            Compare::Lt => "<",
            Compare::Lte => "<=",
            Compare::Gt => ">",
            Compare::Gte => ">=",
        }
    }
}

/// A value to match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Int(i64),
    Bool(bool),
    Null,
}

/// The detection's condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Search(String),
    Not(Box<Condition>),
    And(Vec<Condition>),
    Or(Vec<Condition>),
    /// `1 of PATTERN` / `all of PATTERN`: the searches whose names match (`them`: every
    /// search whose name does not start with `_`).
    OneOf(String),
    AllOf(String),
}
