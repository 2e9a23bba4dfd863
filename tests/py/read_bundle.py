"""Independent readers: opens the Parquet files of an extracted Quarry bundle with pyarrow and
with DuckDB (no Quarry code) and prints, per table, the row count each engine sees and the
distinct container ids, as JSON."""
import json
import pathlib
import sys

import duckdb
import pyarrow.parquet as pq

out = {}
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.parquet")):
    table = pq.read_table(path)
    entry = {"rows": table.num_rows}
    if "container_id" in table.column_names:
        entry["containers"] = sorted({c for c in table.column("container_id").to_pylist() if c})
    escaped = str(path).replace("'", "''")
    entry["duckdb_rows"] = duckdb.sql(f"SELECT count(*) FROM read_parquet('{escaped}')").fetchone()[0]
    out[path.stem] = entry
print(json.dumps(out))
