"""The rows ``uploader_profiles`` counts, and the counting (:mod:`vtag.jobs.pipeline.profiles` writes and joins them).

Each source gives ``video_id, dt, uploader_id, node, level1, source, weight`` rows:

* :func:`tagged_videos`: ``video_tags`` rows of one taxonomy version with ``dt <= D`` and a primary
  ``score >= profiles.min_score`` (``node`` = ``leaf_id``, ``level1`` = ``path[0]``), each weighing
  its ``score`` (``profiles.count: score``, an expected count) or 1 (``profiles.count: one``).
  ``video_tags`` has no uploader column, so a row gets the ``uploader_id`` of its video in that day's dump
  (:func:`dump_uploaders`: of a repeated id the latest upload, ties to the larger uploader id).
* :func:`labeled_videos`: every ``dt=`` day of a labeled dump (Parquet or JSON Lines), ``labels[0]`` as
  the primary node, weight 1; an id the taxonomy does not know is skipped (:func:`skipped_labeled_rows`
  counts those rows, and the rows without a video id or an uploader).

:func:`aggregate` counts each video once (its label wins over its tags, the latest day over earlier
ones) by its weight into the table's columns, maps sorted by key so that equal inputs give equal rows.
"""

from __future__ import annotations

import functools
from typing import Any

#: sums of scores are rounded to this many decimals, so that a rerun gives equal rows whatever order
#: Spark adds them in
_DIGITS = 6


def _videos_schema():
    """The columns every source gives: ``video_id, dt, uploader_id, node, level1, source, weight``."""
    from pyspark.sql import types as T

    return T.StructType([T.StructField(n, T.DateType() if n == "dt" else T.StringType())
                         for n in ("video_id", "dt", "uploader_id", "node", "level1", "source")]
                        + [T.StructField("weight", T.DoubleType())])


def _union(spark, frames: list):
    """The rows of ``frames`` (DataFrames in :func:`_videos_schema`), an empty one when there are none.

    Parameters
    ----------
    spark : SparkSession
    frames : list of DataFrame
    """
    if not frames:
        return spark.createDataFrame([], _videos_schema())
    return functools.reduce(lambda a, b: a.unionByName(b), frames)


def dump_uploaders(spark, dump_root: str, days: list[str]) -> tuple[Any, list[str]]:
    """``(video_id, dt, uploader_id)`` of the dump days ``days``, one row per video and day.

    Parameters
    ----------
    spark : SparkSession
    dump_root : str
        Holds ``dt=YYYY-MM-DD/``.
    days : list of str
        The days to read; a day whose directory is gone is left out and returned.
    """
    from pyspark.sql import functions as F

    from vtag.jobs.pipeline.dumps import DumpNotReadyError, read_day

    frames, missing = [], []
    for d in days:
        try:
            raw = read_day(spark, dump_root, d, require_success=False)
        except DumpNotReadyError:
            missing.append(d)
            continue
        frames.append(raw.select("video_id", "uploader_id", "upload_ts").withColumn("dt", F.lit(d).cast("date")))
    if not frames:
        return spark.createDataFrame([], "video_id string, dt date, uploader_id string"), missing
    rows = functools.reduce(lambda a, b: a.unionByName(b), frames)
    latest = (rows.where(F.col("video_id").isNotNull() & F.col("uploader_id").isNotNull())
              .groupBy("video_id", "dt").agg(F.max(F.struct("upload_ts", "uploader_id")).alias("_u")))
    return latest.select("video_id", "dt", F.col("_u.uploader_id").alias("uploader_id")), missing


def tagged_videos(spark, conf: dict[str, Any], through: str, version: str, min_score: float,
                  dump_root: str, count: str = "score") -> tuple[Any, list[str]]:
    """The ``video_tags`` rows through day ``through`` scored at least ``min_score``, with their uploader.

    Parameters
    ----------
    spark : SparkSession
    conf : dict
        The job conf (warehouse).
    through : str
        Last day counted, YYYY-MM-DD (inclusive).
    version : str
        Only rows of this ``taxonomy_version`` count.
    min_score : float
        Only rows with ``score >= min_score`` count.
    dump_root : str
        Where the uploader of each tagged video is looked up.
    count : {"score", "one"}
        A row's ``weight``: its ``score`` or 1.

    Returns
    -------
    (DataFrame of ``video_id, dt, uploader_id, node, level1, source, weight``, days whose dump is gone)
    """
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from vtag.jobs.warehouse.tables import table_path

    path = table_path(conf, "video_tags")
    if not DeltaTable.isDeltaTable(spark, path):
        return _union(spark, []), []
    tags = (spark.read.format("delta").load(path)
            .where((F.col("dt") <= F.lit(through).cast("date")) & (F.col("taxonomy_version") == version)
                   & (F.col("score") >= F.lit(float(min_score))) & F.col("leaf_id").isNotNull())
            .select("video_id", "dt", F.col("leaf_id").alias("node"), F.col("path")[0].alias("level1"),
                    (F.col("score").cast("double") if count == "score" else F.lit(1.0)).alias("weight")))
    days = sorted(r.d for r in tags.select(F.date_format("dt", "yyyy-MM-dd").alias("d")).distinct().collect())
    ups, missing = dump_uploaders(spark, dump_root, days)
    joined = tags.join(ups, ["video_id", "dt"]).withColumn("source", F.lit("tags"))
    return joined.select(*_videos_schema().names), missing


def _read_labeled_day(spark, path: str):
    """``video_id, uploader_id, node`` (= ``labels[0]``) of one labeled dump day.

    Parameters
    ----------
    spark : SparkSession
    path : str
        ``<labels_root>/dt=YYYY-MM-DD``, Parquet or JSON Lines files.
    """
    from pyspark.sql import functions as F

    from vtag.jobs.pipeline.dumps import JSONL_SUFFIXES, _fs_list, detect_format

    fmt = detect_format(_fs_list(spark, path) or [])
    if fmt == "parquet":
        df = spark.read.option("mergeSchema", "true").parquet(path)
        if "labels" not in df.columns:
            raise ValueError(f"profiles.labels_root: {path} has no labels column (not a labeled dump)")
    else:
        glob = "*.{" + ",".join(x.lstrip(".") for x in JSONL_SUFFIXES) + "}"
        df = (spark.read.schema("video_id string, uploader_id string, labels array<string>")
              .option("pathGlobFilter", glob).json(path))
    return df.select(F.col("video_id").cast("string"), F.col("uploader_id").cast("string"),
                     F.element_at("labels", 1).cast("string").alias("node"))


def _labeled_rows(spark, labels_root: str):
    """``video_id, uploader_id, node, dt`` of every day of the labeled dump ``labels_root``; None
    when it holds no ``dt=`` day. Raises FileNotFoundError when it does not exist."""
    from pyspark.sql import functions as F

    from vtag.jobs.pipeline.dumps import _fs_list, day_path

    names = _fs_list(spark, str(labels_root))
    if names is None:
        raise FileNotFoundError(f"profiles.labels_root {labels_root} does not exist")
    days = sorted(n.removeprefix("dt=") for n in names if n.startswith("dt="))
    frames = [_read_labeled_day(spark, day_path(labels_root, d)).withColumn("dt", F.lit(d).cast("date")) for d in days]
    return functools.reduce(lambda a, b: a.unionByName(b), frames) if frames else None


def labeled_videos(spark, labels_root: str, taxonomy) -> Any:
    """Every day of the labeled dump ``labels_root`` as ``video_id, dt, uploader_id, node, level1, source,
    weight`` (1).

    Parameters
    ----------
    spark : SparkSession
    labels_root : str
        Holds ``dt=YYYY-MM-DD/`` days of LABELED_SCHEMA rows (Parquet or JSON Lines).
    taxonomy : Taxonomy
        Gives each primary node its level-1 ancestor; unknown ids are skipped (counted by
        :func:`skipped_labeled_rows`).
    """
    from pyspark.sql import functions as F

    rows = _labeled_rows(spark, labels_root)
    if rows is None:
        return _union(spark, [])
    level1 = spark.createDataFrame([(n.id, taxonomy.path(n.id)[0]) for n in taxonomy.nodes], "node string, level1 string")
    out = (rows.where(F.col("video_id").isNotNull()).join(F.broadcast(level1), "node")
           .withColumn("source", F.lit("labels")).withColumn("weight", F.lit(1.0)))
    return out.select(*_videos_schema().names)


def skipped_labeled_rows(spark, labels_root: str, taxonomy) -> dict[str, int]:
    """How many rows of the labeled dump ``labels_root`` no profile counts, by reason (one Spark job):
    ``no_video_id``, ``no_uploader`` (a profile is per uploader) and ``unknown_label`` (no primary
    label, or one that is no node of ``taxonomy``); a row is counted under its first reason.

    Parameters
    ----------
    spark : SparkSession
    labels_root : str
    taxonomy : Taxonomy
    """
    from pyspark.sql import functions as F

    rows = _labeled_rows(spark, labels_root)
    if rows is None:
        return {"no_video_id": 0, "no_uploader": 0, "unknown_label": 0}
    no_vid = F.col("video_id").isNull()
    no_up = ~no_vid & F.col("uploader_id").isNull()
    unknown = ~no_vid & ~no_up & (F.col("node").isNull() | ~F.col("node").isin(list(taxonomy.by_id)))
    got = rows.agg(*[F.sum(c.cast("int")).alias(n) for n, c in
                     (("no_video_id", no_vid), ("no_uploader", no_up), ("unknown_label", unknown))]).first()
    return {k: int(got[k] or 0) for k in ("no_video_id", "no_uploader", "unknown_label")}


def aggregate(videos, version: str, updated_dt: str):
    """Per-uploader sums of the ``weight`` of ``videos`` (each video once) in the ``uploader_profiles``
    columns (maps sorted by key).

    Parameters
    ----------
    videos : DataFrame
        ``video_id, dt, uploader_id, node, level1, source, weight`` (possibly repeating a video).
    version : str
        The rows' ``taxonomy_version``.
    updated_dt : str
        The rows' ``updated_dt``: the last day counted.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy("video_id").orderBy(
        (F.col("source") == "tags").asc(), F.col("dt").desc(), F.col("uploader_id"), F.col("node"))
    once = (videos.where(F.col("uploader_id").isNotNull() & F.col("node").isNotNull())
            .withColumn("_rank", F.row_number().over(w)).where(F.col("_rank") == 1))

    def counts(key: str, name: str):
        per = once.groupBy("uploader_id", key).agg(F.round(F.sum("weight"), _DIGITS).cast("double").alias("c"))
        entries = F.array_sort(F.collect_list(F.struct(F.col(key).alias("k"), F.col("c"))))
        return per.groupBy("uploader_id").agg(F.map_from_entries(entries).alias(name))

    totals = once.groupBy("uploader_id").agg(
        F.round(F.sum("weight"), _DIGITS).cast("double").alias("n_videos"), F.max((F.col("source") == "tags").cast("int")).alias("_tags"))
    return (totals.join(counts("level1", "level1_counts"), "uploader_id").join(counts("node", "leaf_counts"), "uploader_id")
            .select("uploader_id", F.lit(version).alias("taxonomy_version"), "n_videos", "level1_counts", "leaf_counts",
                    F.lit(updated_dt).cast("date").alias("updated_dt"),
                    F.when(F.col("_tags") == 1, "tags").otherwise("labels").alias("source")))
