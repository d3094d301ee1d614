"""Reading one day of a UGC dump into a typed DataFrame, whatever the file format.

``read_day`` returns the columns of ``models.schema.DUMP_SCHEMA`` (typed, nulls where a value could
not be read) plus three bookkeeping columns that validation turns into quarantine rows:

* ``_raw``: the source row as JSON (binary as base64, long strings cut), for the quarantine table;
* ``_read_error``: why the row could not be read as the schema says (null when it could);
* ``_row_key``: a stable hash of the raw row, used to break ties deterministically.

Parquet is read by Spark and cast with ``try_cast``: a value that does not cast is a type error
named by column. JSON Lines are read as text and parsed in Python, because Spark's JSON reader
turns a number or a list into a string without a trace and replaces invalid UTF-8 silently.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime, timezone

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.schema import to_spark
from models.schema import DUMP_SCHEMA

RAW_STRING_CUT = 2000  # characters of a string field kept in `_raw`
RAW_BINARY_CUT = 64  # bytes of a binary field kept (base64) in `_raw`

DUMP_SPARK_SCHEMA = to_spark(DUMP_SCHEMA)
READ_SCHEMA = T.StructType(
    [T.StructField(f.name, f.dataType, True) for f in DUMP_SPARK_SCHEMA]
    + [
        T.StructField("_raw", T.StringType(), True),
        T.StructField("_read_error", T.StringType(), True),
    ]
)


#: file endings read as JSON Lines (``vtag generate`` writes them as Spark text parts, ``*.txt``)
JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".txt", ".txt.gz")


class DumpNotReadyError(RuntimeError):
    """The day's directory is missing, empty or lacks its ``_SUCCESS`` marker."""


def day_path(dump_root: str, dt: str) -> str:
    return f"{str(dump_root).rstrip('/')}/dt={dt}"


def _fs_list(spark: SparkSession, path: str) -> list[str] | None:
    """File names directly under ``path`` through Hadoop's FileSystem (local, HDFS, S3 alike)."""
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(hpath):
        return None
    return [st.getPath().getName() for st in fs.listStatus(hpath)]


def detect_format(names: list[str]) -> str:
    data = [n for n in names if not n.startswith(("_", "."))]
    if any(n.endswith(".parquet") for n in data):
        return "parquet"
    if any(n.endswith(JSONL_SUFFIXES) for n in data):
        return "jsonl"
    raise DumpNotReadyError(f"no .parquet or .jsonl files among {sorted(data)[:10]}")


def read_day(
    spark: SparkSession, dump_root: str, dt: str, *, fmt: str | None = None, require_success: bool = True
) -> DataFrame:
    """Read ``<dump_root>/dt=<dt>/`` (Parquet or JSON Lines) into :data:`READ_SCHEMA` + ``_row_key``."""
    path = day_path(dump_root, dt)
    names = _fs_list(spark, path)
    if names is None:
        raise DumpNotReadyError(f"dump day {path} does not exist")
    if require_success and "_SUCCESS" not in names:
        raise DumpNotReadyError(f"dump day {path} has no _SUCCESS marker: the day is not complete")
    fmt = fmt or detect_format(names)
    if fmt == "parquet":
        df = _read_parquet(spark, path)
    elif fmt == "jsonl":
        df = _read_jsonl(spark, path)
    else:
        raise ValueError(f"unknown dump format {fmt!r} (parquet or jsonl)")
    return df.withColumn("_row_key", F.xxhash64("_raw"))


# ---------------------------------------------------------------------------- Parquet
def _raw_json(df: DataFrame) -> Column:
    parts = []
    for f in df.schema.fields:
        c = F.col(f"`{f.name}`")
        if isinstance(f.dataType, T.BinaryType):
            c = F.when(c.isNull(), F.lit(None)).otherwise(
                F.concat(
                    F.lit("base64:"),
                    F.base64(F.substring(c, 1, RAW_BINARY_CUT)),
                    F.lit(" ("),
                    F.octet_length(c).cast("string"),
                    F.lit(" bytes)"),
                )
            )
        elif isinstance(f.dataType, T.StringType):
            c = F.substring(c, 1, RAW_STRING_CUT)
        parts.append(c.alias(f.name))
    return F.to_json(F.struct(*parts), {"ignoreNullFields": "false"})


def _read_parquet(spark: SparkSession, path: str) -> DataFrame:
    src = spark.read.option("mergeSchema", "true").parquet(path)
    present = {f.name: f.dataType for f in src.schema.fields}
    cols, errors = [], []
    for field in DUMP_SPARK_SCHEMA.fields:
        name = field.name
        if name not in present:
            cols.append(F.lit(None).cast(field.dataType).alias(name))
            continue
        c = F.col(f"`{name}`")
        if present[name] == field.dataType:
            cols.append(c.alias(name))
            continue
        if isinstance(field.dataType, T.BinaryType) and not isinstance(present[name], T.BinaryType):
            cast = F.lit(None).cast(T.BinaryType())
        else:
            cast = c.try_cast(field.dataType)
        cols.append(cast.alias(name))
        errors.append(F.when(c.isNotNull() & cast.isNull(), F.lit(f"wrong_type:{name}")))
    read_error = F.coalesce(*errors) if errors else F.lit(None).cast("string")
    return src.select(*cols, _raw_json(src).alias("_raw"), read_error.alias("_read_error"))


# ---------------------------------------------------------------------------- JSON Lines
_EXPECTED = {
    "video_id": str,
    "title": str,
    "description": str,
    "cover": str,  # base64, as Spark writes binary to JSON
    "cover_uri": str,
    "uploader_id": str,
    "source_program": str,
    "duration_s": int,
    "upload_ts": (str, int, float),
}


def _cut_raw(obj: dict) -> str:
    out = {}
    for k, v in obj.items():
        if isinstance(v, str) and len(v) > RAW_STRING_CUT:
            v = v[:RAW_STRING_CUT] + f"...({len(v)} chars)"
        out[k] = v
    return json.dumps(out, ensure_ascii=False, default=str)


def _parse_ts(v) -> datetime | None:
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return datetime.fromtimestamp(float(v), tz=timezone.utc)
    ts = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def parse_json_line(data: bytes) -> dict:
    """One JSONL line (raw bytes) -> a dict of the READ_SCHEMA columns (``_read_error`` set on failure)."""
    row: dict = {f.name: None for f in READ_SCHEMA.fields}
    try:
        line = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        row["_raw"] = data[:RAW_STRING_CUT].decode("utf-8", errors="replace")
        row["_read_error"] = f"invalid_utf8: byte {exc.start}"
        return row
    try:
        obj = json.loads(line)
    except ValueError as exc:
        row["_raw"] = line[:RAW_STRING_CUT]
        row["_read_error"] = f"malformed_json: {str(exc)[:80]}"
        return row
    if not isinstance(obj, dict):
        row["_raw"] = line[:RAW_STRING_CUT]
        row["_read_error"] = "malformed_json: a line must be an object"
        return row
    row["_raw"] = _cut_raw(obj)
    for name, kind in _EXPECTED.items():
        v = obj.get(name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, kind):
            row["_read_error"] = row["_read_error"] or f"wrong_type:{name}"
            continue
        try:
            if name == "cover":
                v = base64.b64decode(v, validate=True)
            elif name == "upload_ts":
                v = _parse_ts(v)
            elif name == "duration_s" and not (-(2**31) <= v < 2**31):
                raise ValueError("out of int32 range")
        except (ValueError, OverflowError, TypeError):
            row["_read_error"] = row["_read_error"] or f"wrong_type:{name}"
            continue
        row[name] = v
    return row


def _parse_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    names = [f.name for f in READ_SCHEMA.fields]
    for batch in batches:
        rows = [parse_json_line(bytes(line)) for line in batch["value"] if line is not None and bytes(line).strip()]
        yield pd.DataFrame(rows, columns=names)


def _read_jsonl(spark: SparkSession, path: str) -> DataFrame:
    # as bytes: Spark keeps a line's bytes as they are, and Python decides whether they are UTF-8
    glob = "*.{" + ",".join(x.lstrip(".") for x in JSONL_SUFFIXES) + "}"
    text = spark.read.option("pathGlobFilter", glob).text(path).select(F.col("value").cast("binary"))
    return text.mapInPandas(_parse_partition, READ_SCHEMA)
