"""Reading one day of a UGC dump into a typed DataFrame, whatever the file format.

``read_day`` returns the columns of ``vtag.models.schema.DUMP_SCHEMA`` (typed, nulls where a value could
not be read) plus three bookkeeping columns that validation turns into quarantine rows:

* ``_raw``: the source row as JSON (binary as base64, long strings cut), for the quarantine table;
* ``_read_error``: why the row could not be read as the schema says, a reason code of
  :mod:`vtag.jobs.warehouse.reasons` (``invalid_utf8``, ``malformed_json``, ``wrong_type``; null when it could);
* ``_read_detail``: the particulars (the byte offset, the parser's message, the column and value);
* ``_row_key``: a stable hash of the raw row, used to break ties deterministically.

Parquet is read by Spark and cast with ``try_cast``: a value that does not cast is a type error
named by column. JSON Lines are read as text and parsed in Python, because Spark's JSON reader
turns a number or a list into a string without a trace and replaces invalid UTF-8 silently.

**Files are checked before they are read** (:func:`check_files`, in a thread pool on the driver): a
Parquet file's footer is opened with pyarrow and its schema reconciled with ``DUMP_SCHEMA``; a JSON
Lines file is opened (and a ``.gz`` one decompressed through, which checks its CRC). A file that
cannot be read is a :class:`FileProblem` with reason ``unreadable_file``; a Parquet file that lacks a
required column (``vtag.models.schema.REQUIRED_DUMP_COLUMNS``) or holds a dump column of a type that no
cast turns into the dump's (a list, a struct, a map) is ``schema_mismatch``. Such files are left out of
the read, so Spark never sees them (no failed day, no Java stack trace), and become one quarantine
entry each (:meth:`DayRead.quarantine`); the rows a footer counts are part of the day's invariant.
The other files are read in groups of identical schema, each group cast to ``DUMP_SCHEMA`` on its
own: another integer width, ``timestamp[ns]`` (pandas' default), a timestamp without time zone, a
date, a string holding numbers are cast (per value: what does not cast is a row-level
``wrong_type``), never refused. The Parquet check also reads every data page of the dump's columns
(pyarrow, in batches, page checksums verified where present), so a file whose footer is sound but
whose data pages are corrupt is an ``unreadable_file`` (detail ``data pages: <the error>``, rows from
its footer) instead of failing the day in Spark; this reads each file twice (once here on the driver,
once in Spark): a 150-row day of ``vtag generate`` (one 0.8 MB file, covers inline) is checked in
1.5 ms instead of 0.1 ms for its footer alone.
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import datetime, timezone

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from vtag.jobs.spark.schema import to_spark
from vtag.models.schema import DUMP_SCHEMA, REQUIRED_DUMP_COLUMNS

RAW_STRING_CUT = 2000  # characters of a string field kept in `_raw`
RAW_BINARY_CUT = 64  # bytes of a binary field kept (base64) in `_raw`

DUMP_SPARK_SCHEMA = to_spark(DUMP_SCHEMA)
READ_SCHEMA = T.StructType(
    [T.StructField(f.name, f.dataType, True) for f in DUMP_SPARK_SCHEMA]
    + [
        T.StructField("_raw", T.StringType(), True),
        T.StructField("_read_error", T.StringType(), True),
        T.StructField("_read_detail", T.StringType(), True),
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


# ---------------------------------------------------------------------------- file checks
@dataclass
class FileProblem:
    """A file of the day left out of the read: one ``video_tags_quarantine`` entry.

    ``reason``: ``unreadable_file`` or ``schema_mismatch``; ``detail``: the error or the clashing
    column; ``rows``: the rows its footer gives (None when the file tells none).
    """

    path: str
    reason: str
    detail: str
    rows: int | None = None

    def raw(self) -> str:
        return json.dumps({"path": self.path, "rows": self.rows}, ensure_ascii=False)


@dataclass
class DayRead:
    """One day as read: ``frame`` (READ_SCHEMA + ``_row_key``, rows of the sound files) and the files
    left out (``problems``)."""

    frame: DataFrame
    problems: list[FileProblem] = dc_field(default_factory=list)
    files: int = 0

    @property
    def file_rows(self) -> int:
        """Rows of the files left out, as far as their footers tell."""
        return sum(p.rows or 0 for p in self.problems)

    def quarantine(self, spark: SparkSession, dt: str, run_id: str) -> DataFrame:
        """The file-level quarantine entries (QUARANTINE_SCHEMA columns)."""
        from datetime import date

        schema = "video_id string, dt date, raw string, reason string, detail string, run_id string"
        rows = [(None, date.fromisoformat(dt), p.raw(), p.reason, p.detail[:2000], run_id) for p in self.problems]
        return spark.createDataFrame(rows, schema)

    def describe(self) -> str:
        if not self.problems:
            return ""
        kinds: dict[str, int] = {}
        for p in self.problems:
            kinds[p.reason] = kinds.get(p.reason, 0) + 1
        what = ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items()))
        return f"{len(self.problems)} of {self.files} files quarantined ({what}; {self.file_rows} rows by their footers)"


def _arrow_fs(path: str):
    """(pyarrow filesystem, path on it) for a local path or a URI pyarrow knows (s3a:// read as s3://)."""
    import os

    import pyarrow.fs as pafs

    if "://" not in path and not path.startswith("file:"):
        return pafs.LocalFileSystem(), os.path.abspath(path)
    if path.startswith("file:"):
        return pafs.LocalFileSystem(), "/" + path.removeprefix("file:").lstrip("/")
    scheme, rest = path.split("://", 1)
    if scheme in ("s3a", "s3n"):
        path = "s3://" + rest
    return pafs.FileSystem.from_uri(path)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]


def _spark_castable(t, want: T.DataType) -> bool:
    """Whether a column of arrow type ``t`` can be cast (per value) to the dump's Spark type ``want``."""
    import pyarrow as pa

    if pa.types.is_null(t):
        return True
    if pa.types.is_dictionary(t):
        t = t.value_type
    nested = pa.types.is_nested(t) or pa.types.is_map(t) or pa.types.is_union(t)
    if nested:
        return False
    if isinstance(want, T.BinaryType):
        return True  # not binary: every value is a row-level wrong_type, the rest of the row is kept
    if isinstance(want, T.TimestampType):
        return not (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_boolean(t))
    return not (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t))


def reconcile(schema) -> str | None:
    """Why a file of arrow ``schema`` cannot be read as the dump (``schema_mismatch``), or None."""
    names = set(schema.names)
    missing = [c for c in REQUIRED_DUMP_COLUMNS if c not in names]
    if missing:
        return f"missing required column(s) {missing}"
    for f in DUMP_SPARK_SCHEMA.fields:
        if f.name in names and not _spark_castable(schema.field(f.name).type, f.dataType):
            return f"{f.name}: {schema.field(f.name).type}, the dump schema says {DUMP_SCHEMA.field(f.name).type}"
    return None


#: rows per batch of the data check (:func:`_check_parquet`): bounds the driver's memory per thread
CHECK_BATCH_ROWS = 1024


def _check_parquet(path: str, read_data: bool = True) -> tuple[object | None, FileProblem | None]:
    """(arrow schema, None) for a sound Parquet file, else (None, the problem).

    The footer gives the schema (reconciled with the dump's) and the row count; then, with
    ``read_data``, every data page of the dump's columns is read and decoded (in batches of
    :data:`CHECK_BATCH_ROWS` rows, page checksums verified where the writer stored them), so that a
    file whose footer is sound but whose pages are corrupt is an ``unreadable_file`` with the rows its
    footer counts, not a failed day in Spark.
    """
    import pyarrow.parquet as pq

    try:
        fs, fpath = _arrow_fs(path)
        with fs.open_input_file(fpath) as fh:
            meta = pq.ParquetFile(fh).metadata
            schema = meta.schema.to_arrow_schema()
            rows = int(meta.num_rows)
    except Exception as exc:  # noqa: BLE001 - any failure to open the footer: the file is unreadable
        return None, FileProblem(path, "unreadable_file", _error_text(exc))
    why = reconcile(schema)
    if why:
        return None, FileProblem(path, "schema_mismatch", why, rows)
    if read_data and rows:
        columns = [f.name for f in DUMP_SCHEMA if f.name in schema.names]
        try:
            with fs.open_input_file(fpath) as fh:
                pf = pq.ParquetFile(fh, page_checksum_verification=True)
                read = 0
                for batch in pf.iter_batches(batch_size=CHECK_BATCH_ROWS, columns=columns, use_threads=False):
                    read += batch.num_rows
            if read != rows:
                raise ValueError(f"the footer counts {rows} rows, the pages hold {read}")
        except Exception as exc:  # noqa: BLE001 - corrupt pages under a sound footer
            return None, FileProblem(path, "unreadable_file", "data pages: " + _error_text(exc), rows)
    return schema, None


def _check_text(path: str) -> FileProblem | None:
    try:
        fs, fpath = _arrow_fs(path)
        with fs.open_input_stream(fpath) as fh:
            if path.endswith(".gz"):
                with gzip.GzipFile(fileobj=fh) as gz:
                    while gz.read(1 << 20):
                        pass
            else:
                fh.read(1)
    except Exception as exc:  # noqa: BLE001
        return FileProblem(path, "unreadable_file", _error_text(exc))
    return None


def check_files(paths: list[str], fmt: str, threads: int = 16) -> tuple[dict[str, object], list[FileProblem]]:
    """Check every file of a day in parallel: ({sound path: arrow schema (Parquet) or None}, problems)."""
    if not paths:
        return {}, []
    fn = _check_parquet if fmt == "parquet" else (lambda p: (None, _check_text(p)))
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(paths)))) as pool:
        results = list(pool.map(fn, paths))
    good = {p: schema for p, (schema, problem) in zip(paths, results) if problem is None}
    return good, [problem for _, problem in results if problem is not None]


def _data_files(spark: SparkSession, path: str, fmt: str) -> list[str]:
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    out = []
    for st in fs.listStatus(hpath):
        name = st.getPath().getName()
        if st.isDirectory() or name.startswith(("_", ".")):
            continue
        if fmt == "jsonl" and not name.endswith(JSONL_SUFFIXES):
            continue
        out.append(f"{path.rstrip('/')}/{name}")
    return sorted(out)


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
    """Read ``<dump_root>/dt=<dt>/`` (Parquet or JSON Lines) into :data:`READ_SCHEMA` + ``_row_key``
    (the sound files only: :func:`read_day_checked` also says which files were left out)."""
    return read_day_checked(spark, dump_root, dt, fmt=fmt, require_success=require_success).frame


def read_day_checked(
    spark: SparkSession, dump_root: str, dt: str, *, fmt: str | None = None, require_success: bool = True
) -> DayRead:
    """Check every file of ``<dump_root>/dt=<dt>/`` and read the sound ones (see the module docstring)."""
    path = day_path(dump_root, dt)
    names = _fs_list(spark, path)
    if names is None:
        raise DumpNotReadyError(f"dump day {path} does not exist")
    if require_success and "_SUCCESS" not in names:
        raise DumpNotReadyError(f"dump day {path} has no _SUCCESS marker: the day is not complete")
    fmt = fmt or detect_format(names)
    if fmt not in ("parquet", "jsonl"):
        raise ValueError(f"unknown dump format {fmt!r} (parquet or jsonl)")
    files = _data_files(spark, path, fmt)
    good, problems = check_files(files, fmt)
    if not good:
        df = spark.createDataFrame([], READ_SCHEMA)
    elif fmt == "parquet":
        df = _read_parquet_files(spark, good)
    else:
        df = _read_jsonl(spark, sorted(good))
    return DayRead(df.withColumn("_row_key", F.xxhash64("_raw")), problems, len(files))


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


def _read_parquet_files(spark: SparkSession, files: dict[str, object]) -> DataFrame:
    """Read the sound Parquet files, one Spark read per group of identical schema, each cast on its own
    (so that files whose types differ never meet in one merged schema)."""
    # timestamp[ns] (pandas' default) is read as its INT64 nanoseconds and converted below; Spark
    # refuses the type otherwise ("Illegal Parquet type: INT64 (TIMESTAMP(NANOS,...))")
    spark.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
    groups: dict[str, list[str]] = {}
    schemas: dict[str, object] = {}
    for path, schema in files.items():
        key = schema.remove_metadata().to_string() if schema is not None else ""
        groups.setdefault(key, []).append(path)
        schemas[key] = schema
    frames = [_read_parquet(spark, paths, schemas[key]) for key, paths in sorted(groups.items())]
    return functools.reduce(lambda a, b: a.unionByName(b), frames)


def _read_parquet(spark: SparkSession, paths: list[str], arrow_schema=None) -> DataFrame:
    import pyarrow as pa

    src = spark.read.parquet(*paths)
    present = {f.name: f.dataType for f in src.schema.fields}
    nanos = {
        f.name for f in (arrow_schema or [])
        if pa.types.is_timestamp(f.type) and f.type.unit == "ns" and isinstance(present.get(f.name), T.LongType)
    }
    cols, errors, details = [], [], []
    for field in DUMP_SPARK_SCHEMA.fields:
        name = field.name
        if name not in present:
            cols.append(F.lit(None).cast(field.dataType).alias(name))
            continue
        c = F.col(f"`{name}`")
        if name in nanos:  # INT64 nanoseconds since the epoch (UTC, or wall time read as UTC)
            cols.append(F.timestamp_micros(F.floor(c / 1000)).alias(name))
            continue
        if present[name] == field.dataType:
            cols.append(c.alias(name))
            continue
        if isinstance(field.dataType, T.BinaryType) and not isinstance(present[name], T.BinaryType):
            cast = F.lit(None).cast(T.BinaryType())
        else:
            cast = c.try_cast(field.dataType)
        cols.append(cast.alias(name))
        failed = c.isNotNull() & cast.isNull()
        errors.append(F.when(failed, F.lit("wrong_type")))
        shown = F.lit(f"({present[name].simpleString()})") if isinstance(present[name], T.BinaryType) else (
            F.substring(c.cast("string"), 1, 80))
        details.append(F.when(failed, F.concat(F.lit(f"{name}: "), shown,
                                               F.lit(f" is not a {field.dataType.simpleString()}"))))
    read_error = F.coalesce(*errors) if errors else F.lit(None).cast("string")
    read_detail = F.coalesce(*details) if details else F.lit(None).cast("string")
    return src.select(*cols, _raw_json(src).alias("_raw"), read_error.alias("_read_error"),
                      read_detail.alias("_read_detail"))


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
        row["_read_error"], row["_read_detail"] = "invalid_utf8", f"byte {exc.start}: {exc.reason}"
        return row
    try:
        obj = json.loads(line)
    except ValueError as exc:
        row["_raw"] = line[:RAW_STRING_CUT]
        row["_read_error"], row["_read_detail"] = "malformed_json", str(exc)[:200]
        return row
    if not isinstance(obj, dict):
        row["_raw"] = line[:RAW_STRING_CUT]
        row["_read_error"], row["_read_detail"] = "malformed_json", f"a line must be an object, not {type(obj).__name__}"
        return row
    row["_raw"] = _cut_raw(obj)
    for name, kind in _EXPECTED.items():
        v = obj.get(name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, kind):
            if row["_read_error"] is None:
                row["_read_error"], row["_read_detail"] = "wrong_type", f"{name}: {type(v).__name__} {str(v)[:80]}"
            continue
        try:
            if name == "cover":
                v = base64.b64decode(v, validate=True)
            elif name == "upload_ts":
                v = _parse_ts(v)
            elif name == "duration_s" and not (-(2**31) <= v < 2**31):
                raise ValueError("out of int32 range")
        except (ValueError, OverflowError, TypeError) as exc:
            if row["_read_error"] is None:
                row["_read_error"], row["_read_detail"] = "wrong_type", f"{name}: {str(exc)[:120]}"
            continue
        row[name] = v
    return row


def _parse_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    names = [f.name for f in READ_SCHEMA.fields]
    for batch in batches:
        rows = [parse_json_line(bytes(line)) for line in batch["value"] if line is not None and bytes(line).strip()]
        yield pd.DataFrame(rows, columns=names)


def _read_jsonl(spark: SparkSession, paths: list[str]) -> DataFrame:
    # as bytes: Spark keeps a line's bytes as they are, and Python decides whether they are UTF-8
    text = spark.read.text(*paths).select(F.col("value").cast("binary"))
    return text.mapInPandas(_parse_partition, READ_SCHEMA)
