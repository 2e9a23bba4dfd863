//! The read-only rule for SQL: one query (or EXPLAIN of one, or a SHOW) per statement, nothing
//! that defines, changes, copies or configures.
//!
//! This is the first of two layers: statements are checked here, on the parsed SQL, so the
//! refusal names what was asked for and what to do instead; DataFusion's own `SQLOptions` then
//! re-check the logical plan (no DDL, DML, COPY or SET reach execution), and the object store
//! the engine reads through refuses writes whatever the plan ([`crate::segments`]).

use datafusion::execution::context::SQLOptions;
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;

use crate::{QueryError, Result};

/// The plan-level options every query runs with: nothing but reads.
pub fn read_only_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Checks `sql` is a single read-only statement; the error names what was refused.
pub fn check(sql: &str) -> Result<()> {
    let statements = DFParser::parse_sql(sql).map_err(|e| QueryError::Sql(e.to_string()))?;
    match statements.len() {
        0 => return Err(QueryError::Sql("empty query: nothing to run".into())),
        1 => {}
        n => {
            return Err(QueryError::Refused(format!(
                "{n} statements given; run one query at a time"
            )));
        }
    }
    check_statement(&statements[0])
}

fn check_statement(statement: &DfStatement) -> Result<()> {
    let refuse = |what: &str| {
        Err(QueryError::Refused(format!(
            "{what} is not allowed: `quarry sql` is read-only and reads only the store. \
             Use SELECT (or EXPLAIN, SHOW TABLES); to save results use --format csv|json|parquet \
             with -o FILE"
        )))
    };
    match statement {
        DfStatement::Statement(inner) => match inner.as_ref() {
            Statement::Query(_) | Statement::ShowTables { .. } | Statement::ShowColumns { .. } => {
                Ok(())
            }
            Statement::Explain { statement, .. } => match statement.as_ref() {
                Statement::Query(_) => Ok(()),
                _ => refuse("EXPLAIN of anything but a query"),
            },
            other => refuse(&statement_kind(other)),
        },
        DfStatement::Explain(explain) => check_statement(&explain.statement),
        DfStatement::CreateExternalTable(_) => refuse("CREATE EXTERNAL TABLE"),
        DfStatement::CopyTo(_) => refuse("COPY"),
        DfStatement::Reset(_) => refuse("RESET"),
    }
}

/// The statement's leading keywords ("INSERT", "CREATE TABLE", ...), for the refusal.
fn statement_kind(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    match words.as_slice() {
        [first, second]
            if matches!(
                first.to_ascii_uppercase().as_str(),
                "CREATE" | "DROP" | "ALTER" | "TRUNCATE"
            ) =>
        {
            format!(
                "{} {}",
                first.to_ascii_uppercase(),
                second.to_ascii_uppercase()
            )
        }
        [first, ..] => first.to_ascii_uppercase(),
        [] => "this statement".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_pass() {
        for sql in [
            "SELECT 1",
            "select * from process where pid = 1",
            "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
            "EXPLAIN SELECT * FROM file",
            "SHOW TABLES",
            "SHOW COLUMNS FROM process",
        ] {
            check(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    #[test]
    fn writes_and_definitions_are_refused_by_name() {
        for (sql, named) in [
            ("CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            (
                "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc/'",
                "CREATE EXTERNAL TABLE",
            ),
            ("COPY (SELECT 1) TO '/tmp/x.parquet'", "COPY"),
            ("INSERT INTO process VALUES (1)", "INSERT"),
            ("DELETE FROM process", "DELETE"),
            ("DROP TABLE process", "DROP TABLE"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
            ("EXPLAIN COPY (SELECT 1) TO '/tmp/x'", "COPY"),
        ] {
            let err = check(sql).expect_err(sql).to_string();
            assert!(err.contains("refused"), "{sql}: {err}");
            assert!(err.contains(named), "{sql}: {err} should name {named}");
        }
    }

    #[test]
    fn several_statements_are_refused() {
        let err = check("SELECT 1; DROP TABLE process")
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 statements"), "{err}");
    }

    #[test]
    fn syntax_errors_say_so() {
        let err = check("SELEC * FROM process").unwrap_err();
        assert!(matches!(err, QueryError::Sql(_)), "{err}");
    }
}
