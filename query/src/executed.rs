//! What the recorder saw a container execute: the paths of its exec rows, as `quarry drift`
//! marks changed files that were run. Read-only like every query; the container id is quoted,
//! never trusted as SQL.

use std::collections::BTreeSet;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;

use crate::{Catalog, Result};

impl Catalog {
    /// Every executable path (as the recorder resolved it) that `container_id` executed.
    pub async fn executed_paths(&mut self, container_id: &str) -> Result<BTreeSet<String>> {
        let sql = format!(
            "select distinct exe_path from process where container_id = '{}' and exe_path is \
             not null",
            container_id.replace('\'', "''")
        );
        let mut paths = BTreeSet::new();
        for batch in self.sql(&sql).await? {
            let text = cast(batch.column(0), &DataType::Utf8)?;
            let text = text.as_string::<i32>();
            paths.extend(
                (0..text.len())
                    .filter(|i| !text.is_null(*i))
                    .map(|i| text.value(i).to_string()),
            );
        }
        Ok(paths)
    }
}
