"""The catalog: database name, comments, registration, views, and the metastore that persists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vtag.jobs.warehouse.catalog import (
    SCHEMAS,
    CatalogError,
    column_comments,
    database,
    register_if_configured,
    register_tables,
    view_sql,
)

REPO = Path(__file__).resolve().parents[1]


def test_database_name_is_validated():
    assert database({}) == "vtag"
    assert database({"catalog_database": "main.vtag"}) == "main.vtag"
    for bad in ("vtag; DROP TABLE x", "a.b.c", "1abc", "vt-ag"):
        with pytest.raises(CatalogError, match="catalog_database"):
            database({"catalog_database": bad})


def test_every_column_has_a_comment():
    for table, schema in SCHEMAS.items():
        comments = column_comments(table)
        assert list(comments) == schema.names
        assert all(comments.values()), f"{table}: columns without comment: {[c for c, t in comments.items() if not t]}"


def test_view_sql_knows_its_views():
    with pytest.raises(KeyError, match="unknown view"):
        view_sql("nope", "vtag", "spark")
    with pytest.raises(ValueError, match="engine"):
        view_sql("video_tags_latest", "vtag", "hive")


@pytest.mark.spark
@pytest.mark.slow  # 5-7 s: keeps `pytest -m "not slow"` under 2 minutes
def test_register_tables_names_comments_views(spark, analysts_warehouse):
    wh = analysts_warehouse
    names = register_tables(spark, wh.conf)
    assert set(names) == {f"vtag.{n}" for n in ("video_tags", "video_tags_quarantine", "tag_runs", "uploader_profiles",
                                                 "ugc_dump", "video_tag_labels", "video_tags_latest", "video_uploads")}
    listed = {r.tableName for r in spark.sql("SHOW TABLES IN vtag").collect()}
    assert set(n.split(".")[1] for n in names) <= listed

    # column comments (from models/schema.py docs, else catalog notes) and the table comment
    desc = {r.col_name: r.comment for r in spark.sql("DESCRIBE TABLE vtag.video_tags").collect()}
    assert desc["leaf_id"] == column_comments("video_tags")["leaf_id"]
    q = {r.col_name: r.comment for r in spark.sql("DESCRIBE TABLE vtag.video_tags_quarantine").collect()}
    assert q["raw"].startswith("the row as JSON")
    detail = spark.sql("DESCRIBE DETAIL vtag.tag_runs").collect()[0]
    assert "one row per job run" in (detail["description"] or "")

    # idempotent: a second registration makes no commit
    version = spark.sql("DESCRIBE HISTORY vtag.video_tags LIMIT 1").collect()[0]["version"]
    register_tables(spark, wh.conf)
    assert spark.sql("DESCRIBE HISTORY vtag.video_tags LIMIT 1").collect()[0]["version"] == version

    # the views: one row per label; the latest row per video
    n_labels = sum(len(r["tags"]) for rows in wh.rows.values() for r in rows)
    assert spark.table("vtag.video_tag_labels").count() == n_labels
    latest = {r.video_id: str(r.dt) for r in spark.table("vtag.video_tags_latest").select("video_id", "dt").collect()}
    expect: dict[str, str] = {}
    for dt in sorted(wh.rows):
        for r in wh.rows[dt]:
            expect[r["video_id"]] = dt
    assert latest == expect
    assert latest["v0000"] == wh.days[-1]  # a re-uploaded video: its last day wins


@pytest.mark.spark
def test_registration_follows_the_warehouse(spark, analysts_warehouse, tmp_path_factory):
    """A name registered for another warehouse is re-pointed, never left stale."""
    from vtag.jobs.warehouse.tables import ensure_table

    wh = analysts_warehouse
    other = dict(wh.conf, warehouse=str(tmp_path_factory.mktemp("other") / "warehouse"),
                 catalog_database="vtag_moved", dump_root=None)
    ensure_table(spark, other, "video_tags")
    assert register_tables(spark, other, create_missing=False) == [
        "vtag_moved.video_tags", "vtag_moved.video_tag_labels", "vtag_moved.video_tags_latest"]
    assert spark.table("vtag_moved.video_tags_latest").count() == 0
    back = dict(wh.conf, catalog_database="vtag_moved")
    register_tables(spark, back, create_missing=False)
    assert spark.table("vtag_moved.video_tags").count() == sum(len(v) for v in wh.rows.values())
    assert register_if_configured(spark, back) == []
    spark.sql("DROP DATABASE vtag_moved CASCADE")


@pytest.mark.spark
@pytest.mark.slow
def test_metastore_persists_across_processes(spark, analysts_warehouse, tmp_path_factory, vtag_spark_args):
    """`vtag sql --metastore` (Hive catalog, Derby beside the warehouse) registers; a later process finds the
    names. Without --metastore the names are the session's own: nothing persists."""
    wh = analysts_warehouse
    env = dict(os.environ, PYTHONPATH=str(REPO))
    common = ["--warehouse", str(wh.warehouse), "--conf", f"dump_root={wh.dump_root}", "--conf", "master=local[1]",
              "--conf", "spark.driver.memory=1g", "--conf", "spark.sql.shuffle.partitions=1", *vtag_spark_args]
    out = tmp_path_factory.mktemp("sqlout") / "days.csv"
    first = subprocess.run(
        [sys.executable, "-m", "vtag.jobs.cli", "sql", "--metastore",
         "SELECT dt, count(*) AS n FROM video_tags GROUP BY dt ORDER BY dt", "--csv", str(out), *common],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    lines = out.read_text().splitlines()
    assert lines[0] == '"dt","n"' and len(lines) == 1 + len(wh.days)
    assert (wh.root / ".metastore" / "metastore_db").is_dir()
    second = subprocess.run(
        [sys.executable, "-m", "vtag.jobs.cli", "sql", "--metastore", "--no-register",
         "SELECT count(*) AS n FROM vtag.video_tags_latest", *common],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    n_latest = len({r["video_id"] for rows in wh.rows.values() for r in rows})
    assert str(n_latest) in second.stdout


def test_a_busy_embedded_metastore_is_reported_before_spark_starts(tmp_path):
    """Another process holding Derby's lock: a clear error at once, not a minute of JVM and stack traces."""
    from vtag.jobs.warehouse.catalog import check_metastore_free, local_metastore

    conf = {"warehouse": str(tmp_path / "warehouse"), "spark": {"spark.sql.catalogImplementation": "hive"}}
    db = Path(local_metastore(conf))
    assert db == tmp_path / ".metastore" / "metastore_db"
    assert local_metastore(dict(conf, spark={"spark.sql.catalogImplementation": "in-memory"})) is None
    assert local_metastore(dict(conf, warehouse="s3a://bucket/wh")) is None
    check_metastore_free(conf)  # no database yet
    db.mkdir(parents=True)
    (db / "dbex.lck").write_bytes(b"")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.lockf(fd, fcntl.LOCK_EX); "
         "print('locked', flush=True); time.sleep(60)", str(db / "dbex.lck")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CatalogError, match="in use by another Spark process"):
            check_metastore_free(conf)
    finally:
        holder.kill()
        holder.wait()
    check_metastore_free(conf)  # a stale lock file (its process gone) is no obstacle
