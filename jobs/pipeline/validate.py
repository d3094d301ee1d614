"""Row validation: every row read is either valid for tagging or quarantined with one reason.

Each row read gets ``reason`` (null for a valid row, else one code of :data:`vtag.jobs.warehouse.reasons.REASONS`,
the one fixed list; the first failing check in that list's order names the row) and ``detail``
(the particulars: the column, its length, the byte offset, the parser's message). Row-level codes:
``invalid_utf8``, ``malformed_json``, ``wrong_type`` (from the reader, :mod:`vtag.jobs.pipeline.dumps`),
``null_video_id``, ``overlong``, ``undecodable_cover`` (under ``corrupt_cover: quarantine``),
``cover_outside_root`` (under ``cover_outside_root: quarantine``, :mod:`vtag.jobs.pipeline.covers`),
``empty_content``, ``invalid_duration`` and ``duplicate_video_id`` (the latest upload is kept, ties
broken by a hash of the raw row). ``unreadable_file`` and ``schema_mismatch`` are file-level entries
(:func:`vtag.jobs.pipeline.dumps.check_files`).

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

from vtag.models.schema import MAX_COVER_BYTES, MAX_DESCRIPTION_CHARS, MAX_ID_CHARS, MAX_TITLE_CHARS

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


#: covers with more pixels than this are a missing modality for the model (``vtag.models.image.MAX_COVER_PIXELS``,
#: not imported: that module pulls in torch): validation reads their size from the header and never
#: decodes them (tests/test_faults.py checks the two agree)
MAX_COVER_PIXELS = 40_000_000


def cover_decodes(covers: pd.Series) -> pd.Series:
    """True where the bytes are a JPEG/PNG that decodes completely (null -> True: nothing to decode).

    The image's size comes from its header first: a cover past :data:`MAX_COVER_PIXELS` is not
    decoded (the model treats it as missing, the row is tagged ``cover_missing``), so a 9000 x 9000
    PNG costs a header read, not 240 MB of pixels.
    """
    from PIL import Image

    def ok(b) -> bool:
        if b is None or len(b) == 0:
            return True
        b = bytes(b)
        if not (b.startswith(JPEG_MAGIC) or b.startswith(PNG_MAGIC)):
            return False
        try:
            with Image.open(io.BytesIO(b)) as im:
                w, h = im.size
                if w <= 0 or h <= 0:
                    return False
                if w * h > MAX_COVER_PIXELS:
                    return True  # a missing modality for the model, not a corrupt file: tagged cover_missing
                im.draft("RGB", (64, 64))  # JPEG: decode at reduced scale, enough to find corruption
                im.load()
            return True
        except Exception:
            return False

    return covers.map(ok).astype(bool)


def _checks(corrupt_cover: str, cover_outside_root: str | None) -> list[tuple[Column, Column, Column]]:
    """(condition, reason code, detail) of each check, in the order of precedence of :mod:`vtag.jobs.warehouse.reasons`."""
    if corrupt_cover not in ("quarantine", "tag"):
        raise ValueError(f"corrupt_cover must be 'quarantine' or 'tag', got {corrupt_cover!r}")
    none = F.lit(None).cast("string")
    cover = F.col("cover")
    checks = [
        (F.col("_read_error").isNotNull(), F.col("_read_error"), F.col("_read_detail")),
        (_blank(F.col("video_id")), F.lit("null_video_id"), none),
    ]
    for col, limit in LIMITS.items():
        n = F.char_length(col)
        checks.append((n > limit, F.lit("overlong"), F.format_string(f"{col}: %d chars > {limit}", n)))
    n = F.octet_length(cover)
    checks.append((n > MAX_COVER_BYTES, F.lit("overlong"), F.format_string(f"cover: %d bytes > {MAX_COVER_BYTES}", n)))
    if corrupt_cover == "quarantine":
        checks.append((cover.isNotNull() & (n > 0) & ~F.col("_cover_ok"), F.lit("undecodable_cover"),
                       F.format_string("cover: %d bytes that do not decode as JPEG/PNG", n)))
    uri_unusable = _blank(F.col("cover_uri"))
    if cover_outside_root is not None:
        problem = F.col("_cover_problem")
        if cover_outside_root == "quarantine":
            checks.append((problem.isNotNull(), F.lit("cover_outside_root"),
                           F.concat(F.lit("cover_uri "), F.substring("cover_uri", 1, 300), F.lit(": "), problem)))
        uri_unusable = uri_unusable | problem.isNotNull()
    no_cover = (cover.isNull() | (n == 0)) & uri_unusable
    checks.append((_blank(F.col("title")) & _blank(F.col("description")) & no_cover, F.lit("empty_content"), none))
    checks.append((F.col("duration_s") < 0, F.lit("invalid_duration"),
                   F.format_string("duration_s: %d", F.col("duration_s"))))
    return checks


def _first(checks: list[tuple[Column, Column, Column]], pick: int) -> Column:
    out = None
    for check in checks:
        cond, value = F.coalesce(check[0], F.lit(False)), check[pick]
        out = F.when(cond, value) if out is None else out.when(cond, value)
    return out


def mark(df: DataFrame, corrupt_cover: str = "quarantine", cover_outside_root: str = "missing") -> DataFrame:
    """``df`` from :func:`vtag.jobs.pipeline.dumps.read_day` (with :func:`vtag.jobs.pipeline.covers.mark_covers`'s columns, or
    without) plus ``reason`` (null for a valid row, else a code of :data:`vtag.jobs.warehouse.reasons.REASONS`) and
    ``detail`` (the particulars, free text)."""
    policy = cover_outside_root if "_cover_problem" in df.columns else None
    if corrupt_cover == "quarantine":
        # built here, not at import: workers import this module without a SparkContext
        decodes = F.pandas_udf(cover_decodes, "boolean")
        df = df.withColumn("_cover_ok", decodes(F.col("cover")))
    checks = _checks(corrupt_cover, policy)
    marked = df.withColumn("reason", _first(checks, 1)).withColumn("detail", _first(checks, 2))
    ok = F.col("reason").isNull()
    # valid rows rank first, so an invalid row never makes a valid one look like a duplicate
    w = Window.partitionBy("video_id").orderBy(
        F.col("reason").isNotNull(), F.col("upload_ts").desc_nulls_last(), F.col("_row_key").desc(), F.col("_raw").desc()
    )
    ranked = marked.withColumn("_dup_rank", F.when(ok, F.row_number().over(w)))
    dup = ok & (F.col("_dup_rank") > 1)
    out = ranked.withColumn("detail", F.when(dup, F.lit("another row of the day with this video_id was kept "
                                                         "(the latest upload)")).otherwise(F.col("detail")))
    out = out.withColumn("reason", F.when(dup, F.lit("duplicate_video_id")).otherwise(F.col("reason")))
    return out.drop("_dup_rank", "_cover_ok")


def split_valid(df: DataFrame, corrupt_cover: str = "quarantine") -> tuple[DataFrame, DataFrame]:
    """(valid rows, rejected rows) of ``mark(df)``: each input row lands on exactly one side."""
    marked = mark(df, corrupt_cover)
    return marked.where(F.col("reason").isNull()), marked.where(F.col("reason").isNotNull())


def quarantined_rows(raw: str = "raw", reason: str = "reason") -> Column:
    """How many dump rows one ``video_tags_quarantine`` entry stands for: 1 for a row; for a file-level
    entry (:data:`vtag.jobs.warehouse.reasons.FILE_REASONS`) the row count its footer gave (``raw`` is
    ``{"path": ..., "rows": N}``; 0 when the file told none). Sum it for the invariant."""
    from vtag.jobs.warehouse.reasons import FILE_REASONS

    file_rows = F.get_json_object(F.col(raw), "$.rows").cast("long")
    return (
        F.when(F.col(reason).isin(*FILE_REASONS), F.coalesce(file_rows, F.lit(0))).otherwise(F.lit(1)).cast("long")
    )
