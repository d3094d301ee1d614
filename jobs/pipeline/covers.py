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

**Symlinks** (local file systems; HDFS and object stores have none that matter here): a path is
also resolved to its real path (``os.path.realpath``) and must lie under the root's real path, so a
symlink under the root to ``/etc/passwd`` or to a JPEG outside the root is outside the root (the row
as above); the same check runs on the driver before Spark reads anything (:func:`cover_sources`).

Only the directories that hold a wanted cover and exist are read (on local file systems a directory
whose real path leaves the root is skipped, and a directory holding a link that leaves the root is
read file by file, without that link, so nothing outside the root is opened), with
``ignoreMissingFiles`` and ``ignoreCorruptFiles`` so that a file gone or unreadable at read time is a
missing cover, not a failed day. The listed files are de-duplicated by normalised path before the
join, so a row is never doubled.
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


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def real_root(root: str) -> str | None:
    """The real path of a local cover root (symlinks resolved), None for a remote one."""
    prefix, path = _split(root)
    return None if prefix else os.path.realpath(path)


def normalize_uri(uri: str | None, root: str, real: str | None = None) -> tuple[str | None, str | None]:
    """(normalised path under ``root``, None) or (None, why not) for one ``cover_uri``.

    ``real``: the root's real path (:func:`real_root`), for local roots: the path's own real path
    must lie under it too (a symlink leaving the root is outside it).

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
    if not _under(path, root_path):
        return None, f"outside the cover root {root}"
    if real is not None and not prefix and not _under(os.path.realpath(path), real):
        return None, f"outside the cover root {root} (a symlink whose target lies outside it)"
    return prefix + path, None


def mark_covers(df: DataFrame, root: str) -> DataFrame:
    """``df`` plus ``_cover_path`` (the normalised path to read, for rows that need their cover from
    ``cover_uri``) and ``_cover_problem`` (why a row's ``cover_uri`` is not read, else null)."""
    needs = F.col("cover").isNull() & F.col("cover_uri").isNotNull() & (F.trim("cover_uri") != "")
    real = real_root(root)

    @F.pandas_udf("path string, problem string")
    def norm(uris: pd.Series) -> pd.DataFrame:
        out = [normalize_uri(u, root, real) for u in uris]
        return pd.DataFrame({"path": [o[0] for o in out], "problem": [o[1] for o in out]})

    res = F.when(needs, norm(F.col("cover_uri")))
    return df.withColumn("_cover_norm", res).select(
        "*", F.col("_cover_norm.path").alias("_cover_path"), F.col("_cover_norm.problem").alias("_cover_problem")
    ).drop("_cover_norm")


def _local_sources(d: str, real: str) -> list[str]:
    """What Spark may read of the local directory ``d`` under the real root ``real``: ``[d]`` when it
    holds only files and links that stay under the root, else its files one by one without the links
    that leave it (Spark would descend into a subdirectory, so one makes the list too), and ``[]``
    when ``d`` itself leaves the root or is no directory."""
    real_d = os.path.realpath(d)
    if not os.path.isdir(real_d) or not _under(real_d, real):
        return []
    try:
        entries = list(os.scandir(d))
    except OSError:
        return []
    escaping = {e.name for e in entries if e.is_symlink() and not _under(os.path.realpath(e.path), real)}
    if not escaping and not any(e.is_dir(follow_symlinks=False) for e in entries):
        return [d]
    return sorted(f"{d.rstrip('/')}/{e.name}" for e in entries
                  if e.name not in escaping and not e.name.startswith(("_", ".")) and e.is_file())


def cover_sources(spark: SparkSession, dirs: list[str], root: str) -> list[str]:
    """The directories (or files) Spark's ``binaryFile`` source reads for the wanted ``dirs``: those
    that exist and, locally, lie under the root's real path, a directory holding a symlink that leaves
    the root as its other files (:func:`_local_sources`)."""
    jvm = spark.sparkContext._jvm
    hconf = spark.sparkContext._jsc.hadoopConfiguration()
    real = real_root(root)
    out = []
    for d in dirs:
        if real is not None:
            out.extend(_local_sources(d, real))
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
    dirs = cover_sources(spark, dirs, root) if dirs else []
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
