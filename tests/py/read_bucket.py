"""An independent reader of the fleet's bucket: DuckDB with its httpfs extension (loaded from the
pinned duckdb-extension-httpfs wheel, never downloaded) reads the process table of
s3://BUCKET/PREFIX over S3 with Hive partitioning and prints rows per host, per partition hour
and the names of the `comm` column's type, as JSON. No Quarry code.

Arguments: BUCKET PREFIX; endpoint and credentials from the AWS_* environment."""
import json
import os
import sys
from urllib.parse import urlparse

import duckdb
import duckdb_extension_httpfs

bucket, prefix = sys.argv[1], sys.argv[2]
extension = os.path.join(
    os.path.dirname(duckdb_extension_httpfs.__file__),
    "extensions",
    f"v{duckdb.__version__}",
    "httpfs.duckdb_extension",
)
con = duckdb.connect()
con.execute("SET autoinstall_known_extensions = false")
con.execute("SET autoload_known_extensions = false")
con.execute(f"LOAD '{extension}'")
endpoint = urlparse(os.environ["AWS_ENDPOINT_URL"])
con.execute(
    "CREATE SECRET (TYPE s3, KEY_ID ?, SECRET ?, REGION ?, ENDPOINT ?, URL_STYLE 'path', USE_SSL ?)",
    [
        os.environ["AWS_ACCESS_KEY_ID"],
        os.environ["AWS_SECRET_ACCESS_KEY"],
        os.environ.get("AWS_REGION", "us-east-1"),
        endpoint.netloc,
        endpoint.scheme == "https",
    ],
)
source = f"read_parquet('s3://{bucket}/{prefix}/process/*/*/*/*.parquet', hive_partitioning = true, hive_types = {{'dt': VARCHAR, 'hour': VARCHAR, 'host': VARCHAR}})"
hosts = dict(con.sql(f"SELECT host, count(*) FROM {source} GROUP BY host").fetchall())
hours = sorted({h for (h,) in con.sql(f"SELECT DISTINCT hour FROM {source}").fetchall()})
comm = con.sql(f"SELECT typeof(comm) FROM {source} LIMIT 1").fetchone()[0]
print(json.dumps({"hosts": hosts, "hours": hours, "comm_type": comm}))
