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
``cover_not_image``    has ``cover`` bytes that start with neither a JPEG nor a PNG signature
``empty_content``      has no title, no description and no cover at all: nothing to tag from
``invalid_duration``   has a negative ``duration_s``
``duplicate_video_id`` repeats a ``video_id`` of the day; the latest upload is kept (ties broken
                       by a hash of the raw row), the others are quarantined
=====================  ===================================================================

A cover that looks like an image but does not decode (truncated, corrupt) is not a bad row: it is
a missing modality, tagged with ``cover_missing = true`` (DESIGN.md, "The model"). So is a
``cover_uri`` that resolves to no file.
"""

from __future__ import annotations

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


def row_reason() -> Column:
    """The reason a row is invalid on its own (duplicates aside), or null."""
    cover = F.col("cover")
    is_image = F.substring(cover, 1, 3) == F.lit(JPEG_MAGIC)
    is_image = is_image | (F.substring(cover, 1, 8) == F.lit(PNG_MAGIC))
    checks = [F.col("_read_error"), F.when(_blank(F.col("video_id")), F.lit("null_video_id"))]
    for col, limit in LIMITS.items():
        checks.append(F.when(F.char_length(col) > limit, F.lit(f"overlong:{col}")))
    checks.append(F.when(F.octet_length(cover) > MAX_COVER_BYTES, F.lit("overlong:cover")))
    checks.append(F.when(cover.isNotNull() & (F.octet_length(cover) > 0) & ~is_image, F.lit("cover_not_image")))
    no_cover = (cover.isNull() | (F.octet_length(cover) == 0)) & _blank(F.col("cover_uri"))
    checks.append(
        F.when(_blank(F.col("title")) & _blank(F.col("description")) & no_cover, F.lit("empty_content"))
    )
    checks.append(F.when(F.col("duration_s") < 0, F.lit("invalid_duration")))
    return F.coalesce(*checks)


def mark(df: DataFrame) -> DataFrame:
    """``df`` from :func:`jobs.dumps.read_day` plus ``reason``: null for a valid row, else why not."""
    marked = df.withColumn("reason", row_reason())
    ok = F.col("reason").isNull()
    # valid rows rank first, so an invalid row never makes a valid one look like a duplicate
    w = Window.partitionBy("video_id").orderBy(
        F.col("reason").isNotNull(), F.col("upload_ts").desc_nulls_last(), F.col("_row_key").desc(), F.col("_raw").desc()
    )
    ranked = marked.withColumn("_dup_rank", F.when(ok, F.row_number().over(w)))
    return ranked.withColumn(
        "reason", F.when(ok & (F.col("_dup_rank") > 1), F.lit("duplicate_video_id")).otherwise(F.col("reason"))
    ).drop("_dup_rank")


def split_valid(df: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(valid rows, rejected rows) of ``mark(df)``: each input row lands on exactly one side."""
    marked = mark(df)
    return marked.where(F.col("reason").isNull()), marked.where(F.col("reason").isNotNull())
