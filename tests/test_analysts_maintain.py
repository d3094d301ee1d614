"""`vtag maintain`: requests checked before Spark; OPTIMIZE/Z-ORDER and a forced short VACUUM."""

from __future__ import annotations

import pytest

from vtag.jobs.warehouse import maintain as m


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(vacuum_hours=24.0), "refusing to vacuum video_tags with a retention of 24 hours"),
        (dict(), "nothing to do"),
        (dict(zorder=["leaf_id"]), "go with --optimize"),
        (dict(optimize=True, zorder=["dt"]), "partition column"),
        (dict(optimize=True, zorder=["nope"]), "no such column"),
        (dict(vacuum_hours=-1.0, force=True), "non-negative"),
        (dict(keep_history_days=0), "between 1 and 3650"),
        (dict(keep_history_days=30, vacuum_hours=240.0), "would delete history"),
    ],
)
def test_check_request_refuses(kwargs, message):
    args = dict(table="video_tags", optimize=False, zorder=None, where=None, vacuum_hours=None, force=False,
                keep_history_days=None)
    args.update(kwargs)
    with pytest.raises(m.MaintenanceError, match=message):
        m.check_request(**args)


def test_check_request_accepts():
    m.check_request("video_tags", True, ["leaf_id"], "dt >= '2024-06-01'", 168.0, False)
    m.check_request("tag_runs", False, None, None, 1.0, True)


def test_main_refuses_short_vacuum_without_spark(capsys):
    args = m._arg_parser().parse_args(["--table", "video_tags", "--vacuum", "12"])
    assert m.main(args) == 2
    assert "--force" in capsys.readouterr().err


@pytest.mark.spark
@pytest.mark.slow
def test_optimize_zorder_and_forced_vacuum(spark, tmp_path):
    import random
    from datetime import datetime, timezone

    from tests.builders import load_taxonomies
    from tests.warehouse_builders import spark_frame, tag_row
    from vtag.jobs.config import load_job_conf
    from vtag.jobs.warehouse.tables import ensure_table, replace_day
    from vtag.models.schema import VIDEO_TAGS_SCHEMA

    conf = load_job_conf(overrides={"warehouse": str(tmp_path / "warehouse")})
    ensure_table(spark, conf, "video_tags")
    tax, _ = load_taxonomies()
    rng = random.Random(7)
    now = datetime(2024, 6, 2, tzinfo=timezone.utc)
    for attempt in range(2):  # the same day written twice: the first files become unreferenced
        rows = [tag_row(tax, tax.leaf_ids[i % 5], rng, "2024-06-01", f"r{attempt}", now, f"v{i}", 0.1) for i in range(40)]
        replace_day(spark_frame(spark, rows, VIDEO_TAGS_SCHEMA).repartition(3), conf, "video_tags", "2024-06-01")

    out = m.maintain(spark, conf, "video_tags", optimize=True, zorder=["leaf_id"], where="dt = '2024-06-01'",
                     keep_history_days=30)
    assert out["optimize"]["numFilesRemoved"] >= 2 and out["optimize"]["numFilesAdded"] == 1
    props = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES delta.`{tmp_path}/warehouse/video_tags`").collect()}
    assert props["delta.deletedFileRetentionDuration"] == "interval 30 days"

    with pytest.raises(m.MaintenanceError):
        m.maintain(spark, conf, "video_tags", vacuum_hours=0.0)
    day_dir = tmp_path / "warehouse" / "video_tags" / "dt=2024-06-01"
    before = sorted(day_dir.glob("*.parquet"))
    dry = m.maintain(spark, conf, "video_tags", vacuum_hours=0.0, force=True, dry_run=True)
    assert dry["vacuum"]["files"] == len(before) - 1 >= 3  # all but the optimized file
    assert sorted(day_dir.glob("*.parquet")) == before
    done = m.maintain(spark, conf, "video_tags", vacuum_hours=0.0, force=True)
    assert done["vacuum"]["files"] == dry["vacuum"]["files"]
    assert len(list(day_dir.glob("*.parquet"))) == 1  # old versions' files gone: no time travel to them
    # the relaxed settings were for that call only
    assert spark.conf.get(m.RETENTION_CHECK, "true") == "true"
    assert spark.conf.get(m.LISTING_PARALLELISM) == "10000"
    assert spark.read.format("delta").load(str(tmp_path / "warehouse" / "video_tags")).count() == 40
