"""docs/analysts.md: its schema section matches models/schema.py; every SQL example runs with rows on
the warehouse that `vtag demo` builds (the code of `make demo`, jobs/cli/demo.py ``run_demo``, with
small settings: tests/warehouse_builders.py ``SMALL_DEMO_ARGS``; the session fixture ``make_demo``, built once, on the
shared SparkSession), and the DuckDB-marked ones give `vtag query` the same answers as `vtag sql`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_analysts_query import assert_same
from tests.warehouse_builders import demo_shape
from vtag.jobs.warehouse.catalog import SCHEMA_BEGIN, SCHEMA_END, schema_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "analysts.md"
FENCE = re.compile(r"^```sql([^\n]*)\n(.*?)^```", re.S | re.M)
#: the literal of a ```sql from-history block: a timestamp of the reader's own DESCRIBE HISTORY
HISTORY_TS = re.compile(r"TIMESTAMP AS OF '([^']+)'")


def sql_blocks() -> list[tuple[str, set[str]]]:
    """(statement, the fence's tags: ``duckdb`` = vtag query too, ``from-history``) per ```sql block."""
    return [(body.strip().rstrip(";"), set(info.split())) for info, body in
            FENCE.findall(DOC.read_text(encoding="utf-8"))]


def test_schema_section_matches_the_contract():
    text = DOC.read_text(encoding="utf-8")
    section = text.split(SCHEMA_BEGIN, 1)[1].split(SCHEMA_END, 1)[0]
    assert section.strip() == schema_markdown().strip(), "regenerate: python -m vtag.jobs.warehouse.catalog docs/analysts.md"


def test_the_doc_has_the_promised_examples():
    blocks = sql_blocks()
    text = " ".join(s for s, _ in blocks)
    assert len(blocks) >= 10 and sum("duckdb" in t for _, t in blocks) >= 6
    for needle in ("VERSION AS OF", "TIMESTAMP AS OF", "DESCRIBE HISTORY", "video_uploads", "uploader_id",
                   "video_tag_labels", "video_tags_latest", "PARTITION BY level1", "uploader_profiles"):
        assert needle in text, needle
    history = [s for s, t in blocks if "from-history" in t]
    assert history and all(HISTORY_TS.search(s) for s in history)
    assert "current_timestamp()" not in text  # fails on a warehouse younger than the interval


def _version_timestamp(spark, conf, version: int) -> str:
    """The ``timestamp`` of ``version`` in video_tags' history, as the session time zone prints it."""
    from vtag.jobs.warehouse.tables import table_path

    row = spark.sql(f"DESCRIBE HISTORY delta.`{table_path(conf, 'video_tags')}`").where(f"version = {version}").selectExpr(
        "date_format(timestamp, 'yyyy-MM-dd HH:mm:ss.SSS') AS ts").first()
    return row.ts


@pytest.mark.spark
@pytest.mark.slow
def test_every_doc_query_runs_on_the_demo_and_engines_agree(spark, make_demo):
    from vtag.jobs.analytics import query as q
    from vtag.jobs.analytics.sql import run_sql, to_arrow

    assert all(r.status == "succeeded" for r in make_demo.results.values())
    ts1 = _version_timestamp(spark, make_demo.conf, 1)
    con = q.open_warehouse(make_demo.conf)
    results = {}
    try:
        for i, (statement, tags) in enumerate(sql_blocks()):
            if "from-history" in tags:  # the reader takes the timestamp from their DESCRIBE HISTORY
                statement = HISTORY_TS.sub(f"TIMESTAMP AS OF '{ts1}'", statement)
            result = to_arrow(run_sql(spark, make_demo.conf, statement, register=i == 0))
            assert result.num_rows > 0, f"no rows from the example:\n{statement}"
            if "duckdb" in tags:
                assert_same(result, q.run_query(con, statement), statement, ordered="ORDER BY" in statement)
            results[statement] = result
    finally:
        con.close()

    first, *later = make_demo.days
    tagged = {d: r.rows_tagged for d, r in make_demo.results.items()}
    # time travel: version 1 is the first night, by version and by the history's timestamp alike
    travel = [s for s in results if " AS OF " in s and "GROUP BY dt" in s and "LEFT JOIN" not in s]
    assert len(travel) == 2
    for statement in travel:
        got = [(str(r["dt"]), r["videos"]) for r in results[statement].to_pylist()]
        assert got == [(first, tagged[first])], statement
    (since,) = [s for s in results if "in_version_1" in s]
    got = {str(r["dt"]): (r["videos"], r["in_version_1"], r["leaf_moved"]) for r in results[since].to_pylist()}
    assert got == {first: (tagged[first], tagged[first], 0), **{d: (tagged[d], 0, 0) for d in later}}
    # the profiles come from the demo's labeled set at least (the short training scores few rows >= 0.5)
    (profiles,) = [s for s in results if "FROM uploader_profiles" in s and "LIMIT 5" in s]
    assert "labels" in {r["source"] for r in results[profiles].to_pylist()}


def test_the_examples_use_the_demo_days_and_no_fixture_ids():
    """The examples name `make demo`'s days (vtag demo's defaults), never the unit-test fixture's."""
    text = DOC.read_text(encoding="utf-8")
    shape = demo_shape()
    blocks = " ".join(s for s, t in sql_blocks() if "from-history" not in t)
    assert not re.search(r"2024-06-0\d|'u0\d'|'v000\d'", text), "fixture dates or ids in docs/analysts.md"
    days = set(re.findall(r"\d{4}-\d{2}-\d{2}", blocks))
    assert days and days <= set(shape.days), days
