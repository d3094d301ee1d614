"""``vtag query`` is read-only (issue #18 item 4): one statement that reads, DuckDB closed to files,
network and extensions once the tables are registered. No Spark: the warehouse is written with
delta-rs (``write_deltalake``) in the shape of ``video_tags`` (models/schema.py)."""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from vtag.jobs.analytics import query as q
from vtag.jobs.cli import main as cli_main
from vtag.models.schema import DUMP_SCHEMA, VIDEO_TAGS_SCHEMA

DAYS = (date(2024, 6, 1), date(2024, 6, 2))


def _tag_rows(day: date, n: int) -> list[dict]:
    rows = []
    for k in range(n):
        leaf = ("game_theme_rpg", "game_theme", "game") if k % 2 else ("food_bake", "food", None)
        path = [p for p in reversed(leaf) if p]
        rows.append({
            "video_id": f"v{day.day}-{k}", "dt": day, "leaf_id": leaf[0], "path": path,
            "path_names": [f"名{p}" for p in path], "level1": f"名{path[0]}",
            "level2": f"名{path[1]}", "level3": f"名{path[2]}" if len(path) > 2 else None,
            "level4": None, "level5": None, "score": 0.5 + k / 100,
            "tags": [{"node_id": p, "name": f"名{p}", "level": i + 1, "score": 0.9} for i, p in enumerate(path)],
            "cover_missing": k == 0, "taxonomy_version": "tv1", "model_version": "mv1", "run_id": f"run-{day}",
            "tagged_at": datetime(2024, 6, day.day, 3, tzinfo=timezone.utc),
        })
    return rows


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("vtag-query-ro")
    wh, dump = root / "warehouse", root / "dumps"
    for day in DAYS:  # one commit per day, as the tag job's replaceWhere would leave
        table = pa.Table.from_pylist(_tag_rows(day, 3 + day.day), schema=VIDEO_TAGS_SCHEMA)
        write_deltalake(str(wh / "video_tags"), table, partition_by=["dt"], mode="append")
        day_dir = dump / f"dt={day}"
        day_dir.mkdir(parents=True)
        uploads = [{"video_id": r["video_id"], "title": "标题", "uploader_id": "u1",
                    "upload_ts": r["tagged_at"]} for r in _tag_rows(day, 3 + day.day)]
        pq.write_table(pa.Table.from_pylist(uploads, schema=DUMP_SCHEMA), day_dir / "part-0.parquet")
    return {"root": root, "warehouse": wh, "dump_root": dump, "log": wh / "video_tags" / "_delta_log"}


def _conf(wh: dict) -> dict:
    from vtag.jobs.config import load_job_conf

    return load_job_conf(None, {"warehouse": str(wh["warehouse"]), "dump_root": str(wh["dump_root"])})


def run(capsys, wh: dict, statement: str) -> tuple[int, str, str]:
    rc = cli_main(["query", statement, "--warehouse", str(wh["warehouse"]), "--conf", f"dump_root={wh['dump_root']}"])
    out, err = capsys.readouterr()
    return rc, out, err


def _log_state(wh: dict) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(wh["log"].iterdir())}


def _refused(rc: int, err: str) -> bool:
    """Exit 1 with one line on stderr, no traceback."""
    lines = err.strip().splitlines()
    return rc == 1 and len(lines) == 1 and lines[0].startswith("vtag query: ") and "Traceback" not in err


# ---------------------------------------------------------------------- reads still work
@pytest.mark.parametrize("statement, expect", [
    ("SELECT dt, count(*) AS n FROM video_tags GROUP BY dt ORDER BY dt", "2024-06-02"),
    ("WITH t AS (SELECT * FROM vtag.video_tags) SELECT count(DISTINCT video_id) AS n FROM t", "(1 row)"),
    ("SELECT tag_id, count(*) AS n FROM video_tag_labels GROUP BY ALL ORDER BY n DESC;", "game_theme"),
    ("SELECT count(*) AS uploads FROM video_uploads WHERE dt = DATE '2024-06-02'", " 5\n"),  # dump files stay readable
    ("DESCRIBE video_tags", "taxonomy_version"),
    ("SHOW TABLES", "video_tags_latest"),
    ("SUMMARIZE SELECT score FROM video_tags", "score"),
    ("EXPLAIN SELECT * FROM video_tags WHERE dt = DATE '2024-06-01'", "physical_plan"),
    ("-- a comment first\nPRAGMA table_info('video_tags')", "leaf_id"),
    ("PIVOT (SELECT level1, dt FROM video_tags) ON level1 IN ('名game', '名food') USING count(*)", "名food"),
])
def test_reads_still_work(capsys, warehouse, statement, expect):
    rc, out, err = run(capsys, warehouse, statement)
    assert rc == 0, err
    assert expect in out


def test_select_counts_match_the_table(warehouse):
    result = q.query(_conf(warehouse), "SELECT dt, count(*) AS n FROM video_tags GROUP BY dt ORDER BY dt")
    assert result.column("n").to_pylist() == [4, 5]


# ---------------------------------------------------------------------- writes and escapes refused
def test_copy_into_the_delta_log_fails_and_the_table_still_reads(capsys, warehouse):
    before, version = _log_state(warehouse), DeltaTable(str(warehouse["warehouse"] / "video_tags")).version()
    latest = sorted(warehouse["log"].glob("*.json"))[-1]
    attack = f"COPY (SELECT 'garbage' AS x) TO '{latest}' (FORMAT csv, HEADER false)"
    rc, out, err = run(capsys, warehouse, attack)
    assert _refused(rc, err) and "COPY" in err and "read-only" in err
    # and DuckDB itself refuses it, should a statement ever get past the check
    con = q.open_warehouse(_conf(warehouse))
    try:
        with pytest.raises(duckdb.PermissionException):
            con.sql(attack)
        with pytest.raises(duckdb.PermissionException):
            con.sql(f"COPY (SELECT 1) TO '{warehouse['log'] / '99999999999999999999.json'}'")
    finally:
        con.close()
    assert _log_state(warehouse) == before
    assert DeltaTable(str(warehouse["warehouse"] / "video_tags")).version() == version
    rc, out, err = run(capsys, warehouse, "SELECT count(*) AS n FROM video_tags")
    assert rc == 0 and "9" in out


@pytest.mark.parametrize("statement", [
    "SELECT * FROM read_csv('/etc/passwd', sep = ':')",
    "SELECT content FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/etc/*')",
])
def test_reading_files_outside_the_tables_fails(capsys, warehouse, statement):
    rc, out, err = run(capsys, warehouse, statement)
    assert rc == 1 and "Permission" in err and "Traceback" not in err
    assert "root:" not in out


def test_two_statements_are_refused_and_neither_runs(capsys, warehouse, tmp_path):
    target = tmp_path / "leak.csv"
    rc, out, err = run(capsys, warehouse, f"SELECT 1; COPY (SELECT 1) TO '{target}'")
    assert _refused(rc, err) and "2 statements (SELECT, COPY)" in err
    assert not target.exists() and out == ""
    rc, out, err = run(capsys, warehouse, "SELECT 1; SELECT 2")
    assert _refused(rc, err) and out == ""


def test_install_httpfs_is_refused(capsys, warehouse):
    rc, out, err = run(capsys, warehouse, "INSTALL httpfs")
    assert _refused(rc, err) and "INSTALL" in err
    con = q.open_warehouse(_conf(warehouse))
    try:  # DuckDB's own settings: no extension directory, no loading, no way to switch them back
        with pytest.raises(duckdb.PermissionException):
            con.sql("INSTALL httpfs")
        with pytest.raises(duckdb.PermissionException):
            con.sql("LOAD httpfs")
        with pytest.raises(duckdb.InvalidInputException, match="locked"):
            con.execute("SET enable_external_access = true")
        settings = dict(con.execute(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', "
            "'lock_configuration', 'autoinstall_known_extensions', 'autoload_known_extensions')").fetchall())
        assert settings == {"enable_external_access": "false", "lock_configuration": "true",
                            "autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
    finally:
        con.close()


@pytest.mark.parametrize("statement, word", [
    ("CREATE TABLE x AS SELECT * FROM video_tags", "CREATE"),
    ("DELETE FROM video_tags WHERE dt = DATE '2024-06-01'", "DELETE"),
    ("DROP VIEW video_tags", "DROP"),
    ("INSERT INTO video_tags SELECT * FROM video_tags", "INSERT"),
    ("SET enable_external_access = true", "SET"),
    ("PRAGMA threads = 1", "PRAGMA"),
    ("PRAGMA enable_profiling", "PRAGMA enable_profiling"),
    ("ATTACH '/tmp/other.duckdb' AS other", "ATTACH"),
    ("LOAD httpfs", "LOAD"),
    ("CALL pragma_version()", "CALL"),
    ("EXPORT DATABASE '/tmp/vtag-export'", "EXPORT"),
    ("EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/vtag-explain.csv'", "COPY"),
    ("/* hidden */ COPY video_tags TO '/tmp/vtag-copy.parquet'", "COPY"),
    ("PIVOT video_tags ON level1 USING count(*)", "PIVOT"),  # no IN list: several statements inside
    (";", "no SQL statement"),
])
def test_other_statements_are_refused_with_one_line(capsys, warehouse, statement, word):
    rc, out, err = run(capsys, warehouse, statement)
    assert _refused(rc, err) and word in err, err
    assert out == ""


def test_a_broken_delta_log_is_one_line_not_a_traceback(capsys, tmp_path):
    """What the issue's COPY left behind (an overwritten log entry) now reads as one clear line."""
    wh = {"warehouse": tmp_path / "wh", "dump_root": tmp_path / "no-dumps"}
    table = pa.Table.from_pylist(_tag_rows(DAYS[0], 2), schema=VIDEO_TAGS_SCHEMA)
    write_deltalake(str(wh["warehouse"] / "video_tags"), table, partition_by=["dt"])
    log = sorted((wh["warehouse"] / "video_tags" / "_delta_log").glob("*.json"))[-1]
    log.write_text("garbage\n")
    rc, out, err = run(capsys, wh, "SELECT count(*) FROM video_tags")
    assert _refused(rc, err) and "cannot read Delta table video_tags" in err


def test_check_statement_accepts_reads_only():
    con = duckdb.connect()
    try:
        for ok in ("SELECT 1", "FROM range(3)", "VALUES (1)", "EXPLAIN (FORMAT json) SELECT 1",
                   "EXPLAIN ANALYZE SELECT 1", "PRAGMA version", "DESCRIBE SELECT 1", "SELECT 1;"):
            q.check_statement(con, ok)
        for bad in ("EXPLAIN CREATE TABLE t (x INT)", "PREPARE p AS SELECT 1",
                    "BEGIN TRANSACTION", "CHECKPOINT", "USE memory", "VACUUM"):
            with pytest.raises(q.RefusedStatement):
                q.check_statement(con, bad)
        with pytest.raises(q.QueryError, match="Parser"):
            q.check_statement(con, "SELEC 1")
    finally:
        con.close()


def test_docs_describe_the_read_only_mode():
    text = (Path(__file__).resolve().parents[1] / "docs" / "analysts.md").read_text(encoding="utf-8")
    for needle in ("enable_external_access", "lock_configuration", "One statement", "INSTALL", "allowed_directories"):
        assert needle in text


def test_the_docs_duckdb_queries_pass_the_check():
    """Every ``sql duckdb`` block of docs/analysts.md is one read-only statement (they run against
    the Spark-built warehouse in test_analysts_docs)."""
    from tests.test_analysts_docs import sql_blocks

    con = duckdb.connect()
    try:
        blocks = [s for s, tags in sql_blocks() if "duckdb" in tags]
        assert len(blocks) >= 6
        for statement in blocks:
            q.check_statement(con, statement)
    finally:
        con.close()
