"""Independent reader: opens a Quarry store's `process` table with pyarrow's Hive dataset
support (no Quarry code) and prints the rows whose argv mentions a marker, plus the rows of
those processes, as JSON lines."""
import json
import sys

import pyarrow.dataset as ds

store, marker = sys.argv[1], sys.argv[2]
table = ds.dataset(f"{store}/process", format="parquet", partitioning="hive").to_table()
rows = table.to_pylist()
pids = {r["pid"] for r in rows if r["argv"] and any(marker in a for a in r["argv"])}
for r in rows:
    if r["pid"] in pids:
        print(json.dumps({k: r[k] for k in
                          ("event", "pid", "ppid", "start_ns", "filename", "argv", "exit_code",
                           "exit_signal", "host", "dt", "hour")}, default=str))
