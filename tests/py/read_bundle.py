"""Independent reader: opens the Parquet files of an extracted Quarry bundle with pyarrow (no
Quarry code) and prints, per table, its row count and the distinct container ids, as JSON."""
import json
import pathlib
import sys

import pyarrow.parquet as pq

out = {}
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.parquet")):
    table = pq.read_table(path)
    entry = {"rows": table.num_rows}
    if "container_id" in table.column_names:
        entry["containers"] = sorted({c for c in table.column("container_id").to_pylist() if c})
    out[path.stem] = entry
print(json.dumps(out))
