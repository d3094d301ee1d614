"""docs/analysts.md: its schema section matches models/schema.py; every SQL example runs with rows on
a warehouse shaped like `make demo`'s (its days, uploader and video ids: tests/warehouse_fixture.py
``demo_shape``; `make demo` itself takes minutes), and the DuckDB-marked ones give `vtag query` the
same answers as `vtag sql`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_analysts_query import assert_same
from tests.warehouse_fixture import demo_shape, get_demo_warehouse
from vtag.jobs.warehouse.catalog import SCHEMA_BEGIN, SCHEMA_END, schema_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "analysts.md"
FENCE = re.compile(r"^```sql([^\n]*)\n(.*?)^```", re.S | re.M)


def sql_blocks() -> list[tuple[str, bool]]:
    """(statement, duckdb too?) for every fenced ```sql block."""
    out = []
    for info, body in FENCE.findall(DOC.read_text(encoding="utf-8")):
        tags = info.split()
        out.append((body.strip().rstrip(";"), "duckdb" in tags))
    return out


def test_schema_section_matches_the_contract():
    text = DOC.read_text(encoding="utf-8")
    section = text.split(SCHEMA_BEGIN, 1)[1].split(SCHEMA_END, 1)[0]
    assert section.strip() == schema_markdown().strip(), "regenerate: python -m vtag.jobs.warehouse.catalog docs/analysts.md"


def test_the_doc_has_the_promised_examples():
    blocks = sql_blocks()
    text = " ".join(s for s, _ in blocks)
    assert len(blocks) >= 10 and sum(d for _, d in blocks) >= 6
    for needle in ("VERSION AS OF", "TIMESTAMP AS OF", "DESCRIBE HISTORY", "video_uploads", "uploader_id",
                   "video_tag_labels", "video_tags_latest", "PARTITION BY level1"):
        assert needle in text, needle


@pytest.mark.spark
def test_every_doc_query_runs_and_engines_agree(spark, tmp_path_factory):
    from vtag.jobs.analytics import query as q
    from vtag.jobs.analytics.sql import run_sql, to_arrow

    wh = get_demo_warehouse(spark, tmp_path_factory)
    con = q.open_warehouse(wh.conf)
    results = {}
    try:
        for i, (statement, duck) in enumerate(sql_blocks()):
            result = to_arrow(run_sql(spark, wh.conf, statement, register=i == 0))
            assert result.num_rows > 0, f"no rows from the example:\n{statement}"
            if duck:
                assert_same(result, q.run_query(con, statement), statement, ordered="ORDER BY" in statement)
            results[statement] = result
    finally:
        con.close()

    # time travel: by version and by time, the re-tagged day as first tagged (the old taxonomy)
    before = [(wh.taxonomy.version, len(wh.rows_before_retag))]
    travel = [s for s in results if "GROUP BY taxonomy_version" in s and " AS OF " in s]
    assert len(travel) == 2
    for statement in travel:
        got = results[statement].to_pylist()
        assert [(r["taxonomy_version"], r["videos"]) for r in got] == before, statement
    moved = [s for s in results if "leaf_before" in s][0]
    n_moved = sum(r["videos"] for r in results[moved].to_pylist())
    old = {r["video_id"]: r["leaf_id"] for r in wh.rows_before_retag}
    assert n_moved == sum(old[r["video_id"]] != r["leaf_id"] for r in wh.rows[wh.retag_day]) > 0
    assert {r["taxonomy_version"] for r in wh.rows[wh.retag_day]} == {wh.taxonomy_v2.version}


def test_the_examples_use_the_demo_days_and_no_fixture_ids():
    """The examples name `make demo`'s days (vtag demo's defaults), never the unit-test fixture's."""
    text = DOC.read_text(encoding="utf-8")
    shape = demo_shape()
    blocks = " ".join(s for s, _ in sql_blocks())
    assert not re.search(r"2024-06-0\d|'u0\d'|'v000\d'", text), "fixture dates or ids in docs/analysts.md"
    days = set(re.findall(r"\d{4}-\d{2}-\d{2}", blocks))
    assert days and days <= set(shape.days), days
