"""`vtag query` (DuckDB over delta-rs) against `vtag sql` (Spark): same names, same answers, dt pruning."""

from __future__ import annotations

import argparse
import math
from datetime import datetime

import pyarrow as pa
import pytest

from vtag.jobs.analytics import query as q


def normalize(table: pa.Table) -> list[tuple]:
    """Rows as comparable tuples: floats rounded, timestamps without zone, Decimal/HUGEINT as float."""

    def norm(v):
        if isinstance(v, float):
            return None if math.isnan(v) else round(v, 4)
        if isinstance(v, datetime):
            return v.replace(tzinfo=None)
        if isinstance(v, (list, tuple)):
            return tuple(norm(x) for x in v)
        if isinstance(v, dict):
            return tuple((k, norm(x)) for k, x in v.items())
        if v.__class__.__name__ == "Decimal":
            return round(float(v), 4)
        if isinstance(v, int) and not isinstance(v, bool):
            return round(float(v), 4)
        return v

    return [tuple(norm(v) for v in row.values()) for row in table.to_pylist()]


def assert_same(spark_table: pa.Table, duck_table: pa.Table, statement: str, ordered: bool = False):
    assert spark_table.column_names == duck_table.column_names, statement
    a, b = normalize(spark_table), normalize(duck_table)
    if not ordered:
        a, b = sorted(a, key=repr), sorted(b, key=repr)
    assert a == b, f"engines disagree on:\n{statement}"


#: every table and view, whole (the doc's examples add aggregates, windows and joins)
AGREEMENT = [
    "SELECT * FROM video_tags WHERE dt = DATE '2024-06-01'",
    "SELECT * FROM video_tag_labels",
    "SELECT * FROM vtag.video_tags_latest",
    "SELECT * FROM video_uploads WHERE dt >= DATE '2024-06-02'",
    "SELECT * FROM video_tags_quarantine",
    "SELECT * FROM tag_runs",
]


@pytest.mark.spark
@pytest.mark.slow
def test_spark_and_duckdb_agree(spark, analysts_warehouse):
    from vtag.jobs.analytics.sql import run_sql, to_arrow

    wh = analysts_warehouse
    con = q.open_warehouse(wh.conf)
    try:
        for statement in AGREEMENT:
            s = to_arrow(run_sql(spark, wh.conf, statement, register=statement is AGREEMENT[0]))
            d = q.run_query(con, statement)
            assert s.num_rows > 0, statement
            assert_same(s, d, statement)
    finally:
        con.close()


@pytest.mark.spark
def test_dt_filter_reads_only_that_day(spark, analysts_warehouse):
    wh = analysts_warehouse
    files: list[str] = []
    one = q.query(wh.conf, "SELECT count(*) AS n FROM video_tags WHERE dt = DATE '2024-06-02'", files)
    assert one.column("n").to_pylist() == [len(wh.rows["2024-06-02"])]
    assert files and all("/video_tags/dt=2024-06-02/" in f for f in files), files

    files.clear()
    q.query(wh.conf, "SELECT count(*) AS n FROM video_tag_labels WHERE dt >= DATE '2024-06-03'", files)
    assert files and all("/dt=2024-06-03/" in f for f in files), files

    files.clear()  # without a dt predicate every day's current file is read
    q.query(wh.conf, "SELECT count(*) FROM video_tags", files)
    assert {f.split("/dt=")[1][:10] for f in files} == set(wh.days)


@pytest.mark.spark
def test_query_cli_prints_and_writes(spark, analysts_warehouse, tmp_path_factory, capsys):
    wh = analysts_warehouse
    base = dict(warehouse=str(wh.warehouse), job_conf=None, conf=[f"dump_root={wh.dump_root}"], limit=5,
                csv=None, parquet=None, files_read=False)
    rc = q.main(argparse.Namespace(statement="SELECT video_id, level1, path_names FROM video_tags ORDER BY video_id, dt", **base))
    out = capsys.readouterr().out
    assert rc == 0 and "video_id" in out and "rows, 5 shown)" in out

    csv = tmp_path_factory.mktemp("out") / "tags.csv"
    rc = q.main(argparse.Namespace(statement="SELECT dt, tags FROM video_tags WHERE dt = DATE '2024-06-01'",
                                   **dict(base, csv=str(csv))))
    lines = csv.read_text(encoding="utf-8").splitlines()
    assert rc == 0 and len(lines) == 1 + len(wh.rows["2024-06-01"]) and '"node_id"' in lines[1].replace('""', '"')

    pq_out = csv.with_suffix(".parquet")
    rc = q.main(argparse.Namespace(statement="SELECT * FROM video_tags_latest", **dict(base, parquet=str(pq_out))))
    import pyarrow.parquet as pqm

    assert rc == 0 and pqm.read_table(pq_out).schema.field("tags").type.value_type.num_fields == 4

    rc = q.main(argparse.Namespace(statement="SELECT nope FROM video_tags", **base))
    err = capsys.readouterr().err
    assert rc == 1 and "nope" in err

    rc = q.main(argparse.Namespace(statement="SELECT 1", **dict(base, warehouse=str(wh.root / "missing"))))
    assert rc == 1 and "no video_tags Delta table" in capsys.readouterr().err


def test_format_table_aligns_and_counts():
    t = pa.table({"name": ["游戏", "film"], "n": [1, 22], "tags": [[{"a": 1}], None]})
    text = q.format_table(t, limit=1)
    assert "游戏" in text and "(2 rows, 1 shown)" in text
    assert q.format_table(pa.table({"x": pa.array([], pa.int64())})).endswith("(0 rows)")
