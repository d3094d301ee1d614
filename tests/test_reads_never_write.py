"""Reads never write (#19 item 2): ``vtag sql``, ``vtag query``, ``vtag report`` (both engines) and
``vtag retag plan`` leave every Delta table at the version it had, also on a warehouse whose tables
were written without comments; registering comments is ``vtag catalog register``'s write."""

from __future__ import annotations

import shutil

import pytest

from vtag.jobs.cli import main as cli_main
from vtag.jobs.warehouse.catalog import TABLE_NAMES, column_comments

pytestmark = pytest.mark.spark


def versions(warehouse) -> dict[str, int]:
    """Table -> current Delta version (read by delta-rs: no Spark action that could write)."""
    from deltalake import DeltaTable

    out = {}
    for name in TABLE_NAMES:
        path = warehouse / name
        if DeltaTable.is_deltatable(str(path)):
            out[name] = DeltaTable(str(path)).version()
    return out


def base_args(wh) -> list[str]:
    return ["--warehouse", str(wh.warehouse), "--conf", f"dump_root={wh.dump_root}",
            "--conf", "spark.sql.catalogImplementation=in-memory"]


def read_commands(wh, tmp_path) -> dict[str, list[str]]:
    day = wh.days[-1]
    return {
        "sql": ["sql", "SELECT dt, count(*) AS n FROM video_tags GROUP BY dt", *base_args(wh)],
        "sql history": ["sql", "DESCRIBE HISTORY video_tags", *base_args(wh)],
        "sql view": ["sql", "SELECT count(*) FROM video_tag_labels", *base_args(wh)],
        "query": ["query", "SELECT reason, count(*) FROM video_tags_quarantine GROUP BY reason", *base_args(wh)[:4]],
        "report duckdb": ["report", "--date", day, "--out", str(tmp_path / "r1.html"), *base_args(wh)[:4]],
        "report spark": ["report", "--date", day, "--out", str(tmp_path / "r2.html"), "--engine", "spark", *base_args(wh)],
    }


@pytest.mark.slow
def test_every_read_command_leaves_every_version(analysts_warehouse, tmp_path, capsys):
    wh = analysts_warehouse
    before = versions(wh.warehouse)
    assert set(before) == set(TABLE_NAMES)
    for what, argv in read_commands(wh, tmp_path).items():
        assert cli_main(argv) == 0, (what, capsys.readouterr().err)
        assert versions(wh.warehouse) == before, f"`vtag {what}` committed to a table"


@pytest.mark.slow  # ~4 s (two retag plans on Spark)
def test_retag_plan_leaves_every_version(analysts_warehouse, spark, tmp_path, capsys):
    from vtag.jobs.pipeline.retag import plan

    wh = analysts_warehouse
    v1, v2 = tmp_path / "v1.yaml", tmp_path / "v2.yaml"
    _write_taxonomy(wh.taxonomy, v1)
    _write_taxonomy(wh.taxonomy_v2, v2)
    before = versions(wh.warehouse)
    days = plan(spark, wh.conf, str(v1), str(v2), wh.days[0], wh.days[-1])
    assert sum(d.rows for d in days) > 0
    assert versions(wh.warehouse) == before
    # the command, too (its session is the test's; --conf keeps the in-memory catalog)
    argv = ["retag", "plan", "--from", str(v1), "--to", str(v2), "--start", wh.days[0], "--end", wh.days[-1],
            "--json", *base_args(wh)]
    assert cli_main(argv) == 0, capsys.readouterr().err
    assert versions(wh.warehouse) == before


def test_retag_plan_on_an_empty_warehouse_creates_nothing(spark, tmp_path):
    from tests.builders import load_taxonomies
    from vtag.jobs.pipeline.retag import RetagError, plan

    v1, v2 = load_taxonomies()
    _write_taxonomy(v1, tmp_path / "v1.yaml")
    _write_taxonomy(v2, tmp_path / "v2.yaml")
    conf = {"warehouse": str(tmp_path / "wh")}
    with pytest.raises(RetagError, match="no video_tags table"):
        plan(spark, conf, str(tmp_path / "v1.yaml"), str(tmp_path / "v2.yaml"), "2024-06-01", "2024-06-01")
    assert not (tmp_path / "wh" / "video_tags").exists()


def test_old_warehouse_without_comments_reads_clean_and_register_writes_them(analysts_warehouse, spark, tmp_path, capsys):
    """A table written without column comments (an older vtag): ``vtag sql`` reads it without a commit;
    ``vtag catalog register`` is the write that sets them."""
    from deltalake import DeltaTable

    wh = analysts_warehouse
    old = tmp_path / "old"
    shutil.copytree(wh.warehouse, old / "warehouse")
    path = old / "warehouse" / "tag_runs"
    shutil.rmtree(path)
    runs = spark.read.format("delta").load(str(wh.warehouse / "tag_runs"))
    runs.select([runs[c].alias(c, metadata={}) for c in runs.columns]).write.format("delta").save(str(path))
    assert not any(f.metadata.get("comment") for f in spark.read.format("delta").load(str(path)).schema.fields)
    args = ["--warehouse", str(old / "warehouse"), "--conf", "spark.sql.catalogImplementation=in-memory",
            "--conf", "catalog_database=vtag_old"]
    before = versions(old / "warehouse")
    assert cli_main(["sql", "SELECT count(*) FROM tag_runs", *args]) == 0, capsys.readouterr().err
    assert cli_main(["sql", "DESCRIBE TABLE tag_runs", *args]) == 0
    assert versions(old / "warehouse") == before

    assert cli_main(["catalog", "register", "--json", *args]) == 0, capsys.readouterr().err
    after = versions(old / "warehouse")
    assert after["tag_runs"] == before["tag_runs"] + 1
    assert {k: v for k, v in after.items() if k != "tag_runs"} == {k: v for k, v in before.items() if k != "tag_runs"}
    schema = DeltaTable(str(path)).schema().to_arrow()
    got = {f.name: (f.metadata or {}).get(b"comment", b"").decode() for f in schema}
    assert got["status"] == column_comments("tag_runs")["status"]


def test_tables_are_created_with_their_comments(analysts_warehouse):
    from deltalake import DeltaTable

    wh = analysts_warehouse
    for name in TABLE_NAMES:
        schema = DeltaTable(str(wh.warehouse / name)).schema().to_arrow()
        got = {f.name: (f.metadata or {}).get(b"comment", b"").decode() for f in schema}
        assert got == column_comments(name), name


def _write_taxonomy(taxonomy, path) -> None:
    import yaml

    data = taxonomy.to_dict()
    data.pop("version", None)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
