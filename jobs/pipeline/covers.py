"""``cover_uri``: covers resolved only under the cover root, one cover per file however it is spelled.

A row without ``cover`` bytes but with a ``cover_uri`` gets its cover from the file the URI names,
through Spark's ``binaryFile`` source. The URI is first normalised (:func:`normalize_uri`, a pandas
UDF over the rows): ``file:`` stripped, ``.``/``..``/``//`` collapsed, so ``/D/x.jpg`` and
``/D/../D/x.jpg`` are one path, and accepted only when it lies under the **cover root** (job conf
``cover_root``; default: the run's dump root). Anything else is a problem of the row, never a read:

- a relative path, a path outside the root (``file:///etc/passwd``, ``/tmp/x.jpg``, ``/D/../../x``),
  another scheme or host than the root's: by default (``cover_outside_root: missing``) the row is
  tagged with ``cover_missing = true``; with ``cover_outside_root: quarantine`` it is quarantined with
  reason ``cover_outside_root`` (:func:`vtag.jobs.pipeline.validate.mark`);
- a file or directory that does not exist, a file over ``MAX_COVER_BYTES``, a file that cannot be
  read: ``cover_missing = true``.

Only the directories that hold a wanted cover and exist are listed (on local file systems a
directory whose real path leaves the root through a symlink is skipped), with ``ignoreMissingFiles``
and ``ignoreCorruptFiles`` so that a file gone or unreadable at read time is a missing cover, not a
failed day. The listed files are de-duplicated by normalised path before the join, so a row is never
doubled. Not covered: a *file* that is a symlink pointing outside the root is still followed.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from vtag.models.schema import MAX_COVER_BYTES

POLICIES = ("missing", "quarantine")
_NEEDS = "_cover_needs"


def cover_policy(conf: dict[str, Any]) -> str:
    """The job conf's ``cover_outside_root`` (``missing``, the default, or ``quarantine``)."""
    from vtag.jobs.config import ConfigError

    policy = str(conf.get("cover_outside_root") or "missing")
    if policy not in POLICIES:
        raise ConfigError(f"cover_outside_root must be one of {POLICIES}, got {policy!r}")
    return policy


def _split(uri: str) -> tuple[str, str]:
    """(``scheme://authority`` or "" for local paths, path) of a URI or path."""
    if uri.startswith("file:"):
        rest = uri[len("file:"):]
        if rest.startswith("//"):
            host, _, path = rest[2:].partition("/")
            if host not in ("", "localhost"):
                return f"file://{host}", "/" + path
            return "", "/" + path
        return "", rest
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        host, _, path = rest.partition("/")
        return f"{scheme.lower()}://{host}", "/" + path
    return "", uri


def _norm(path: str) -> str:
    path = posixpath.normpath(path)
    return "/" + path.lstrip("/") if path.startswith("/") else path


def cover_root(conf: dict[str, Any], dump_root: str) -> str:
    """The normalised cover root: job conf ``cover_root``, else the dump root (local: absolute)."""
    root = str(conf.get("cover_root") or dump_root)
    prefix, path = _split(root)
    if not prefix:
        path = os.path.abspath(path)
    return prefix + _norm(path)


def normalize_uri(uri: str | None, root: str) -> tuple[str | None, str | None]:
    """(normalised path under ``root``, None) or (None, why not) for one ``cover_uri``.

    >>> normalize_uri("file:///D/a/../x.jpg", "/D")
    ('/D/x.jpg', None)
    >>> normalize_uri("x.jpg", "/D")[1]
    'relative path'
    """
    if uri is None or not str(uri).strip():
        return None, None
    uri = str(uri).strip()
    if "\x00" in uri:
        return None, "NUL in path"
    prefix, path = _split(uri)
    if not path.startswith("/"):
        return None, "relative path"
    root_prefix, root_path = _split(root)
    path = _norm(path)
    if prefix != root_prefix:
        return None, f"outside the cover root {root}"
    if not (path == root_path or path.startswith(root_path.rstrip("/") + "/")):
        return None, f"outside the cover root {root}"
    return prefix + path, None


def mark_covers(df: DataFrame, root: str) -> DataFrame:
    """``df`` plus ``_cover_path`` (the normalised path to read, for rows that need their cover from
    ``cover_uri``) and ``_cover_problem`` (why a row's ``cover_uri`` is not read, else null)."""
    needs = F.col("cover").isNull() & F.col("cover_uri").isNotNull() & (F.trim("cover_uri") != "")

    @F.pandas_udf("path string, problem string")
    def norm(uris: pd.Series) -> pd.DataFrame:
        out = [normalize_uri(u, root) for u in uris]
        return pd.DataFrame({"path": [o[0] for o in out], "problem": [o[1] for o in out]})

    res = F.when(needs, norm(F.col("cover_uri")))
    return df.withColumn("_cover_norm", res).select(
        "*", F.col("_cover_norm.path").alias("_cover_path"), F.col("_cover_norm.problem").alias("_cover_problem")
    ).drop("_cover_norm")


def _existing_dirs(spark: SparkSession, dirs: list[str], root: str) -> list[str]:
    """The directories of ``dirs`` that exist (and, locally, really lie under ``root``)."""
    jvm = spark.sparkContext._jvm
    hconf = spark.sparkContext._jsc.hadoopConfiguration()
    real_root = os.path.realpath(root) if "://" not in root else None
    out = []
    for d in dirs:
        if real_root is not None:
            real = os.path.realpath(d)
            if not os.path.isdir(real) or not (real == real_root or real.startswith(real_root.rstrip("/") + "/")):
                continue
            out.append(d)
            continue
        hpath = jvm.org.apache.hadoop.fs.Path(d)
        try:
            fs = hpath.getFileSystem(hconf)
            if fs.exists(hpath) and fs.getFileStatus(hpath).isDirectory():
                out.append(d)
        except Exception:  # noqa: BLE001 - an unreachable directory is a missing cover
            continue
    return out


def resolve_covers(spark: SparkSession, df: DataFrame, root: str) -> DataFrame:
    """Fill ``cover`` from the file at ``_cover_path`` (:func:`mark_covers`) where ``cover`` is null; a
    path that names no readable file leaves ``cover`` null (the row is tagged ``cover_missing``)."""
    if "_cover_path" not in df.columns:
        df = mark_covers(df, root)
    parent = F.regexp_extract(F.col("_cover_path"), r"^(.*)/[^/]*$", 1)
    dirs = sorted(r[0] or "/" for r in df.where(F.col("_cover_path").isNotNull()).select(parent).distinct().collect())
    dirs = _existing_dirs(spark, dirs, root) if dirs else []
    if not dirs:
        return df.drop("_cover_path", "_cover_problem")
    strip_file = lambda c: F.regexp_replace(c, r"^file:(//)?(?=/)", "")  # noqa: E731
    files = (
        spark.read.format("binaryFile")
        .option("ignoreMissingFiles", "true")
        .option("ignoreCorruptFiles", "true")
        .load(dirs)
        .where(F.col("length") <= MAX_COVER_BYTES)
        .select(strip_file(F.col("path")).alias("_cover_path"), F.col("content").alias("_cover_content"))
        .dropDuplicates(["_cover_path"])
    )
    joined = df.join(files, on="_cover_path", how="left")
    return joined.withColumn("cover", F.coalesce(F.col("cover"), F.col("_cover_content"))).drop(
        "_cover_path", "_cover_problem", "_cover_content"
    )
