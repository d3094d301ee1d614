"""The quarantine reason codes: one list in jobs/warehouse/reasons.py, read by the docs, the catalog and the generator."""

from __future__ import annotations

from pathlib import Path

import pytest

from vtag.jobs.warehouse.reasons import (
    FILE_REASONS,
    REASONS,
    REASONS_BEGIN,
    REASONS_END,
    markdown_table,
    reason_list,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("doc", ["README.md", "docs/analysts.md"])
def test_the_docs_carry_the_list(doc):
    text = (REPO / doc).read_text(encoding="utf-8")
    section = text.split(REASONS_BEGIN, 1)[1].split(REASONS_END, 1)[0]
    assert section.strip() == markdown_table().strip(), f"regenerate: python -m vtag.jobs.warehouse.reasons {doc}"


def test_codes_are_plain_and_the_catalog_comment_lists_them():
    from vtag.jobs.warehouse.catalog import column_comments

    assert all(code.isidentifier() and code == code.lower() for code in REASONS)
    assert set(FILE_REASONS) <= set(REASONS)
    comment = column_comments("video_tags_quarantine")["reason"]
    assert reason_list() in comment
    assert "detail" in column_comments("video_tags_quarantine")


def test_the_generator_promises_codes_of_the_list():
    from vtag.jobs.synth.bad import KINDS

    assert set(KINDS.values()) <= set(REASONS)


def test_validation_reads_cover_sizes_as_the_model_does():
    from vtag.jobs.pipeline.validate import MAX_COVER_PIXELS
    from vtag.models.image import MAX_COVER_PIXELS as MODEL_MAX

    assert MAX_COVER_PIXELS == MODEL_MAX
