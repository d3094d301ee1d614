"""One day's rows through the model: the tagging chain that ``vtag tag`` and ``vtag retag run`` share.

:func:`tag_rows`: the rows of a day as read from the dump -> cover paths against the cover root
(:func:`vtag.jobs.pipeline.covers.mark_covers`) -> validation (:func:`vtag.jobs.pipeline.validate.mark`,
bad rows become quarantine rows) -> covers read through ``binaryFile`` -> the model's input columns
(plus the uploader profiles when joined) -> ``repartition(tag_partitions)`` -> ``Predictor`` in
``mapInArrow`` -> the run's columns ``dt``, ``run_id``, ``tagged_at``. A new output column or another
inference operator is one edit here. Publishing and recording the run (success and failure) is the
one other shared step, :func:`vtag.jobs.pipeline.publish.run_day`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from vtag.jobs.pipeline.covers import cover_policy, cover_root, mark_covers, resolve_covers
from vtag.jobs.pipeline.inference import MODEL_INPUT_COLUMNS, PROFILE_INPUT_COLUMNS, predict_fn
from vtag.jobs.pipeline.profiles import join_profiles
from vtag.jobs.pipeline.validate import mark
from vtag.jobs.spark.schema import to_spark
from vtag.models.schema import PREDICTION_SCHEMA


@dataclass
class DayRows:
    """What :func:`tag_rows` returns; ``tagged, quarantine = tag_rows(...)`` unpacks the two tables' rows."""

    #: ``video_tags`` rows: PREDICTION_SCHEMA + ``dt``, ``run_id``, ``tagged_at`` (lazy: the model runs when read)
    tagged: DataFrame
    #: ``video_tags_quarantine`` rows of the rows validation refused (file-level entries are the caller's)
    quarantine: DataFrame
    #: every input row with ``reason``/``detail``/``_cover_problem`` (persisted: the caller unpersists it)
    marked: DataFrame

    def __iter__(self) -> Iterator[DataFrame]:
        yield self.tagged
        yield self.quarantine


def model_input(rows: DataFrame, joined) -> DataFrame:
    """The ``mapInArrow`` input: MODEL_INPUT_COLUMNS, plus the profile columns when ``joined`` is given.

    Parameters
    ----------
    rows : DataFrame
        The day's valid rows with covers resolved.
    joined : vtag.jobs.pipeline.profiles.JoinProfiles or None
        The profiles of the days before (None: ``profiles.enabled`` is false).
    """
    if joined is None:
        return rows.select(*MODEL_INPUT_COLUMNS)
    return join_profiles(rows, joined.frame).select(*MODEL_INPUT_COLUMNS, *PROFILE_INPUT_COLUMNS)


def with_run_columns(rows: DataFrame, dt: str, run_id: str, tagged_at: datetime) -> DataFrame:
    """``rows`` with the run's columns of ``video_tags``: ``dt``, ``run_id``, ``tagged_at``."""
    return (rows.withColumn("dt", F.lit(dt).cast("date")).withColumn("run_id", F.lit(run_id))
            .withColumn("tagged_at", F.lit(tagged_at)))


def tag_rows(
    spark: SparkSession,
    conf: Any,
    rows: DataFrame,
    bundle: str,
    *,
    dt: str,
    run_id: str,
    tagged_at: datetime,
    taxonomy_version: str | None,
    dump_root: str,
    outside_root: str | None = None,
    joined=None,
    allow_taxonomy_mismatch: bool = False,
    load_log: str | None = None,
    input_log: str | None = None,
) -> DayRows:
    """Tag a day's rows with ``bundle``: the one tagging chain of ``vtag tag`` and ``vtag retag run``.

    Parameters
    ----------
    spark : SparkSession
    conf : JobConf
        Reads ``corrupt_cover``, ``cover_root``, ``cover_outside_root`` and ``tag_partitions``.
    rows : DataFrame
        The day's dump rows (the DESIGN dump schema, plus ``_raw``), not yet validated.
    bundle : str
        The model bundle (an absolute path: the workers load it).
    dt, run_id, tagged_at
        The run's columns of the output rows.
    taxonomy_version : str or None
        The version the workers' ``Predictor`` must find in the bundle
        (:func:`vtag.models.bundle.check_bundle_taxonomy`).
    dump_root : str
        The run's dump root (the default cover root).
    outside_root : str, optional
        The policy for a ``cover_uri`` outside the cover root (default: the conf's ``cover_outside_root``).
    joined : JoinProfiles, optional
        Uploader profiles to join into the model input.
    allow_taxonomy_mismatch : bool
        Tag with a bundle of another taxonomy version.
    load_log, input_log : str, optional
        Test hooks (:mod:`vtag.jobs.pipeline.inference`).

    Returns
    -------
    DayRows
        ``(tagged, quarantine)``, and the persisted ``marked`` rows the caller counts and unpersists.
    """
    root = cover_root(conf, dump_root)
    policy = outside_root or cover_policy(conf)
    marked = mark(mark_covers(rows, root), str(conf.get("corrupt_cover") or "quarantine"), policy)
    marked = marked.persist(StorageLevel.MEMORY_AND_DISK)
    quarantine = marked.where(F.col("reason").isNotNull()).select(
        F.col("video_id"),
        F.lit(dt).cast("date").alias("dt"),
        F.col("_raw").alias("raw"),
        F.col("reason"),
        F.col("detail"),
        F.lit(run_id).alias("run_id"),
    )
    valid = marked.where(F.col("reason").isNull())
    n_parts = int(conf.get("tag_partitions") or spark.sparkContext.defaultParallelism)
    inputs = model_input(resolve_covers(spark, valid, root), joined).repartition(max(1, n_parts))
    preds = inputs.mapInArrow(
        predict_fn(bundle, taxonomy_version, allow_taxonomy_mismatch, load_log, input_log), to_spark(PREDICTION_SCHEMA)
    )
    return DayRows(with_run_columns(preds, dt, run_id, tagged_at), quarantine, marked)
