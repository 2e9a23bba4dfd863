//! The configuration file, `/etc/quarry/quarry.toml` (or `--config PATH`, `$QUARRY_CONFIG`):
//! the defaults every command starts from. A flag always overrides the file.
//!
//! A missing default file is an empty configuration; a file named with `--config` or
//! `$QUARRY_CONFIG` must exist. A file that does not parse, has an unknown key or a value of
//! the wrong form is an error naming the file, the line and the key, before anything is done.
//! `deploy/quarry.toml` is the documented example.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Deserializer};

/// Where the configuration is read from when neither --config nor $QUARRY_CONFIG names one.
pub const DEFAULT_PATH: &str = "/etc/quarry/quarry.toml";

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The store every command uses unless --store or $QUARRY_STORE says otherwise.
    pub store: Option<PathBuf>,
    #[serde(default)]
    pub record: Record,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub query: Query,
    #[serde(default)]
    pub isolate: Isolate,
    #[serde(default)]
    pub upload: Upload,
    /// The file this came from (None: no file).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[record]`: the recorder's defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// How often buffered rows are sealed (e.g. "5s").
    #[serde(default, deserialize_with = "duration")]
    pub seal_interval: Option<Duration>,
    /// What live detection holds for rows (e.g. "24M").
    #[serde(default, deserialize_with = "detect_memory")]
    pub detect_memory: Option<u64>,
}

/// `[retention]`: caps applied by `quarry retain` and, on a schedule, by `quarry record`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default, deserialize_with = "duration")]
    pub max_age: Option<Duration>,
    #[serde(default, deserialize_with = "bytes")]
    pub max_size: Option<u64>,
    #[serde(default)]
    pub compact: bool,
    /// How often the recorder applies it (e.g. "5m").
    #[serde(default, deserialize_with = "duration")]
    pub interval: Option<Duration>,
}

/// `[upload]`: `quarry record`'s upload to a bucket (`--upload`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    /// The bucket, s3://BUCKET[/PREFIX]; set, every recording uploads.
    pub to: Option<String>,
    /// The host name the store goes under in the bucket.
    pub host: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub interval: Option<Duration>,
    /// How long the exit keeps trying to ship the backlog.
    #[serde(default, deserialize_with = "duration")]
    pub drain: Option<Duration>,
    /// Retention may delete segments not uploaded yet.
    #[serde(default)]
    pub retain_unuploaded: bool,
}

/// `[query]`: sql, timeline and hunt.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// Memory a query may use before it spills or fails (e.g. "2G").
    #[serde(default, deserialize_with = "query_size")]
    pub memory_limit: Option<u64>,
}

/// `[isolate]`: quarantines.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Isolate {
    /// Collectors let through every quarantine unless `--allow` names others (ADDR, CIDR,
    /// ADDR:PORT, [IPv6]:PORT).
    #[serde(default)]
    pub allow: Vec<String>,
}

fn parsed<'de, D, T>(d: D, parse: fn(&str) -> Result<T, String>) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
{
    let text = String::deserialize(d)?;
    parse(&text).map(Some).map_err(serde::de::Error::custom)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    parsed(d, crate::cli::parse::parse_duration)
}

fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    parsed(d, crate::cli::parse::parse_size)
}

fn detect_memory<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    parsed(d, crate::cli::parse::parse_detect_memory)
}

fn query_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    parsed(d, crate::cli::parse::parse_query_memory)
}

impl Config {
    /// Reads `explicit` (which must exist), or the default file when there is one.
    pub fn load(explicit: Option<&Path>) -> anyhow::Result<Config> {
        let (path, must_exist) = match explicit {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_PATH), false),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                return Ok(Config::default());
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "reading the configuration file {} (given with --config or $QUARRY_CONFIG)",
                    path.display()
                )));
            }
        };
        Config::parse(&text, path)
    }

    /// Parses the text of the file at `path`.
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Config> {
        let mut config: Config = toml::from_str(text).with_context(|| {
            format!(
                "the configuration file {} is not valid (see deploy/quarry.toml for every key)",
                path.display()
            )
        })?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }
}

static CURRENT: OnceLock<Config> = OnceLock::new();

/// Sets the configuration of this run (once, in `main`, before any command runs).
pub fn install(config: Config) {
    let _ = CURRENT.set(config);
}

/// The configuration of this run: what `main` installed, else none.
pub fn current() -> &'static Config {
    CURRENT.get_or_init(Config::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/quarry.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let c = Config::parse(&text, &path).unwrap();
        assert_eq!(c.store.as_deref(), Some(Path::new("/var/lib/quarry/store")));
        assert_eq!(c.record.seal_interval, Some(Duration::from_secs(5)));
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        let path = Path::new("/etc/quarry/quarry.toml");
        let e =
            Config::parse("store = \"/s\"\n[retention]\nmax_agee = \"7d\"\n", path).unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("/etc/quarry/quarry.toml"), "{text}");
        assert!(
            text.contains("line 3") && text.contains("max_agee"),
            "{text}"
        );
        let e = Config::parse("[record]\nseal_interval = \"5y\"\n", path).unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.contains("line 2") && text.contains("unknown unit"),
            "{text}"
        );
        assert!(Config::load(Some(Path::new("/nonexistent/quarry.toml"))).is_err());
    }
}
