"""``vtag tag`` and ``vtag retag run`` share one tagging chain (:func:`vtag.jobs.pipeline.day.tag_rows`)."""

from __future__ import annotations

import pytest

from tests.builders import dump_rows, write_dump_day

pytestmark = [pytest.mark.spark, pytest.mark.slow]

DAY = "2026-11-20"
RUN_COLUMNS = {"run_id", "tagged_at"}


def _tags(spark, conf):
    from vtag.jobs.warehouse.tables import table_path

    rows = spark.read.format("delta").load(table_path(conf, "video_tags")).collect()
    return {r.video_id: {k: v for k, v in r.asDict(recursive=True).items() if k not in RUN_COLUMNS} for r in rows}


def test_tag_and_retag_run_write_identical_rows(spark, tmp_path, tiny_bundle, tiny_bundle_v2, tiny_taxonomy_path,
                                                retag_v2_path):
    """The day tagged by ``tag`` with the v2 bundle, and the same day re-inferred wholesale by ``retag run`` with it,
    hold the same ``video_tags`` rows, run metadata aside.

    ``retag`` refuses a re-tag to the same version, and a version change that moves no node remaps every row
    without the model; so the day is first tagged at v1 and re-tagged ``--from`` a third taxonomy: a row at a
    version other than ``--from`` is re-inferred, i.e. every row of the day goes through the model again."""
    from vtag.jobs.config import load_job_conf
    from vtag.jobs.pipeline import retag
    from vtag.jobs.pipeline.tag import tag_day

    dump = tmp_path / "dump"
    good, bad = dump_rows("p", 30)
    write_dump_day(dump, DAY, good + [r for r, _ in bad])
    base = {"profiles.enabled": "false", "tag_partitions": "2"}  # retag joins no profiles
    direct = load_job_conf(overrides={**base, "warehouse": str(tmp_path / "direct"), "taxonomy": str(retag_v2_path)})
    tag_day(spark, direct, DAY, dump_root=str(dump), bundle=str(tiny_bundle_v2))

    conf = load_job_conf(overrides={**base, "warehouse": str(tmp_path / "retag"), "taxonomy": str(tiny_taxonomy_path)})
    tag_day(spark, conf, DAY, dump_root=str(dump), bundle=str(tiny_bundle))
    other = tiny_taxonomy_path.parent / "tiny-taxonomy-v2.yaml"
    (res,) = retag.run(spark, conf, str(other), str(retag_v2_path), DAY, DAY, str(tiny_bundle_v2), dump_root=str(dump))
    assert (res.status, res.remapped, res.reinferred) == ("succeeded", 0, res.rows_before) and res.rows_before > 0

    want, got = _tags(spark, direct), _tags(spark, conf)
    assert set(got) == set(want)
    for vid, row in want.items():
        g = got[vid]
        assert g.keys() == row.keys()
        for k, v in row.items():
            assert g[k] == pytest.approx(v) if k == "score" else g[k] == v, (vid, k)
