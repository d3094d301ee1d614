"""Row validation: every row read is either valid for tagging or quarantined with one reason.

The checks, in the order their reason wins (the first failing check names the row's reason):

=====================  ===================================================================
reason                 the row ...
=====================  ===================================================================
``invalid_utf8``       (JSONL) holds bytes that are not UTF-8
``malformed_json``     (JSONL) is not a JSON object
``wrong_type:<col>``   has a value of the wrong type in ``<col>``
``null_video_id``      has no ``video_id`` (null or blank)
``overlong:<col>``     has a field past its limit (``models.schema.MAX_*``)
``undecodable_cover``  has ``cover`` bytes that do not decode as a JPEG or PNG image (random bytes,
                       a truncated file) — under the default ``corrupt_cover: quarantine``
``empty_content``      has no title, no description and no cover at all: nothing to tag from
``invalid_duration``   has a negative ``duration_s``
``duplicate_video_id`` repeats a ``video_id`` of the day; the latest upload is kept (ties broken
                       by a hash of the raw row), the others are quarantined
=====================  ===================================================================

Corrupt covers: DESIGN.md treats a corrupt cover as a missing modality, and the model does (the
``Predictor`` tags such a row with ``cover_missing = true``). The job's policy is a setting,
``corrupt_cover``: ``quarantine`` (the default: the upstream defect is surfaced with its reason, and
the row is re-tagged once the cover is fixed) or ``tag`` (tag from text and context, flag
``cover_missing``). A ``cover_uri`` that resolves to no file is always a missing modality.
"""

from __future__ import annotations

import io

import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from models.schema import MAX_COVER_BYTES, MAX_DESCRIPTION_CHARS, MAX_ID_CHARS, MAX_TITLE_CHARS

JPEG_MAGIC = bytes.fromhex("ffd8ff")
PNG_MAGIC = bytes.fromhex("89504e470d0a1a0a")

LIMITS = {
    "video_id": MAX_ID_CHARS,
    "title": MAX_TITLE_CHARS,
    "description": MAX_DESCRIPTION_CHARS,
    "uploader_id": MAX_ID_CHARS,
    "source_program": MAX_ID_CHARS,
    "cover_uri": 4096,
}


def _blank(c: Column) -> Column:
    return c.isNull() | (F.trim(c) == "")


def cover_decodes(covers: pd.Series) -> pd.Series:
    """True where the bytes are a JPEG/PNG that decodes completely (null -> True: nothing to decode)."""
    from PIL import Image

    def ok(b) -> bool:
        if b is None or len(b) == 0:
            return True
        b = bytes(b)
        if not (b.startswith(JPEG_MAGIC) or b.startswith(PNG_MAGIC)):
            return False
        try:
            with Image.open(io.BytesIO(b)) as im:
                im.draft("RGB", (64, 64))  # JPEG: decode at reduced scale, enough to find corruption
                im.load()
            return True
        except Exception:
            return False

    return covers.map(ok).astype(bool)


def row_reason(corrupt_cover: str = "quarantine") -> Column:
    """The reason a row is invalid on its own (duplicates aside), or null."""
    if corrupt_cover not in ("quarantine", "tag"):
        raise ValueError(f"corrupt_cover must be 'quarantine' or 'tag', got {corrupt_cover!r}")
    cover = F.col("cover")
    checks = [F.col("_read_error"), F.when(_blank(F.col("video_id")), F.lit("null_video_id"))]
    for col, limit in LIMITS.items():
        checks.append(F.when(F.char_length(col) > limit, F.lit(f"overlong:{col}")))
    checks.append(F.when(F.octet_length(cover) > MAX_COVER_BYTES, F.lit("overlong:cover")))
    if corrupt_cover == "quarantine":
        # built here, not at import: workers import this module without a SparkContext
        decodes = F.pandas_udf(cover_decodes, "boolean")
        checks.append(
            F.when(
                cover.isNotNull() & (F.octet_length(cover) > 0) & ~decodes(cover), F.lit("undecodable_cover")
            )
        )
    no_cover = (cover.isNull() | (F.octet_length(cover) == 0)) & _blank(F.col("cover_uri"))
    checks.append(
        F.when(_blank(F.col("title")) & _blank(F.col("description")) & no_cover, F.lit("empty_content"))
    )
    checks.append(F.when(F.col("duration_s") < 0, F.lit("invalid_duration")))
    return F.coalesce(*checks)


def mark(df: DataFrame, corrupt_cover: str = "quarantine") -> DataFrame:
    """``df`` from :func:`jobs.dumps.read_day` plus ``reason``: null for a valid row, else why not."""
    marked = df.withColumn("reason", row_reason(corrupt_cover))
    ok = F.col("reason").isNull()
    # valid rows rank first, so an invalid row never makes a valid one look like a duplicate
    w = Window.partitionBy("video_id").orderBy(
        F.col("reason").isNotNull(), F.col("upload_ts").desc_nulls_last(), F.col("_row_key").desc(), F.col("_raw").desc()
    )
    ranked = marked.withColumn("_dup_rank", F.when(ok, F.row_number().over(w)))
    return ranked.withColumn(
        "reason", F.when(ok & (F.col("_dup_rank") > 1), F.lit("duplicate_video_id")).otherwise(F.col("reason"))
    ).drop("_dup_rank")


def split_valid(df: DataFrame, corrupt_cover: str = "quarantine") -> tuple[DataFrame, DataFrame]:
    """(valid rows, rejected rows) of ``mark(df)``: each input row lands on exactly one side."""
    marked = mark(df, corrupt_cover)
    return marked.where(F.col("reason").isNull()), marked.where(F.col("reason").isNotNull())
