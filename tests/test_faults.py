"""Fault injection: the tag job under bad input, failures and kills at each commit point (#18).

Every case ends with :func:`_check_day`: on the tables' current versions the day's invariant holds
for the run that wrote it, no ``video_id`` repeats, both tables' rows of the day come from one run
(or are the state before the faulty run, unchanged), and ``tag_runs`` says what happened.

One tiny bundle (the session's), one warehouse per test module, a few tiny days shared by the cases;
the profile refresh is off (tests/test_profiles_job.py covers it). Kills are simulated in-process by
``VTAG_FAULT_INJECT=<point>=abandon`` (the run stops, its heartbeat goes, nothing is rolled back or
recorded: what SIGKILL leaves); tests/test_tag_cli.py SIGKILLs real processes (``cluster``).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.builders import dump_rows, jpeg_bytes, write_dump_day
from vtag.models.schema import DUMP_SCHEMA

pytestmark = [pytest.mark.spark, pytest.mark.slow]

D_FILES, D_RERUN, D_COVERS, D_RACE = "2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"
D_LINKS, D_PAGES = "2026-12-05", "2026-12-06"
NULLABLE = pa.schema([f.with_nullable(True) for f in DUMP_SCHEMA])
TS = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def fx(tmp_path_factory, tiny_taxonomy_path, tiny_bundle):
    from vtag.jobs.config import load_job_conf

    root = tmp_path_factory.mktemp("faults")
    conf = load_job_conf(overrides={"warehouse": str(root / "wh"), "taxonomy": str(tiny_taxonomy_path),
                                    "tag_partitions": "2", "profiles.enabled": "false"})
    dump = root / "dump"
    good, bad = dump_rows("r", 10)
    write_dump_day(dump, D_RERUN, good + [r for r, _ in bad])
    return {"root": root, "conf": conf, "dump": dump, "bundle": tiny_bundle, "bad_rerun": len(bad)}


def _tag(spark, fx, dt, conf=None, **kw):
    from vtag.jobs.pipeline.tag import tag_day

    return tag_day(spark, conf or fx["conf"], dt, dump_root=str(fx["dump"]), bundle=str(kw.pop("bundle", fx["bundle"])),
                   **kw)


def _runs(spark, conf, dt):
    from pyspark.sql import functions as F

    from vtag.jobs.warehouse.tables import table_path

    rows = (spark.read.format("delta").load(table_path(conf, "tag_runs"))
            .where(F.col("dt") == F.lit(dt).cast("date")).orderBy("started_at").collect())
    return [r.asDict() for r in rows]


def _check_day(spark, conf, dt):
    """The day's state on the current versions: (run id that wrote it or None, tags, quarantine rows).

    Asserts: no video_id twice in video_tags; both tables' rows from one run; that run is recorded
    succeeded with the counts the tables hold, and rows read = tagged + quarantined (file entries
    weighted by their footers' rows).
    """
    from pyspark.sql import functions as F

    from vtag.jobs.pipeline.publish_state import day_rows
    from vtag.jobs.pipeline.validate import quarantined_rows

    tags = day_rows(spark, conf, "video_tags", dt)
    quar = day_rows(spark, conf, "video_tags_quarantine", dt)
    t = tags.agg(F.count(F.lit(1)).alias("n"), F.countDistinct("video_id").alias("ids"),
                 F.collect_set("run_id").alias("runs")).first()
    q = quar.agg(F.count(F.lit(1)).alias("n"), F.sum(quarantined_rows()).alias("w"),
                 F.collect_set("run_id").alias("runs")).first()
    assert t.n == t.ids, f"{dt}: {t.n - t.ids} duplicated video_id"
    writers = set(t.runs) | set(q.runs)
    assert len(writers) <= 1, f"{dt}: the day mixes runs {writers}"
    if not writers:
        return None, tags.collect(), quar.collect()
    (writer,) = writers
    run = {r["run_id"]: r for r in _runs(spark, conf, dt)}[writer]
    assert run["status"] == "succeeded", run
    assert (run["rows_tagged"], run["rows_quarantined"]) == (t.n, int(q.w or 0))
    assert run["rows_read"] == t.n + int(q.w or 0)
    return writer, tags.collect(), quar.collect()


# --------------------------------------------------------------------------- bad files
def _frame_rows(tag, n, start=0):
    good, _ = dump_rows(tag, max(2, n + start))
    return good[start:start + n]


def test_bad_files_are_quarantined_and_the_rest_of_the_day_is_tagged(spark, fx):
    day = fx["dump"] / f"dt={D_FILES}"
    good = _frame_rows("f", 6)
    write_dump_day(fx["dump"], D_FILES, good)  # part-0.parquet: 6 good rows
    # pandas' default timestamp[ns] and int64 durations: cast, not refused
    ns = pd.DataFrame({"video_id": ["ns-0", "ns-1"], "title": ["猫咪日常", "家常菜 美食"], "description": [None, "x"],
                       "uploader_id": ["u1", "u2"], "duration_s": [30, 40],
                       "upload_ts": pd.to_datetime(["2026-12-01 08:00:00.123456789", "2026-12-01 09:00:00"],
                                                  format="ISO8601")})
    ns.to_parquet(day / "part-ns.parquet", index=False)
    assert pq.read_schema(day / "part-ns.parquet").field("upload_ts").type == pa.timestamp("ns")
    # a second file whose duration_s is a string: its own read group, cast per value
    pq.write_table(pa.table({"video_id": ["s-0", "s-1"], "title": ["标题", "标题"], "duration_s": ["12", "abc"],
                             "uploader_id": ["u", "u"], "upload_ts": pa.array([TS, TS])}), day / "part-str.parquet")
    # unreadable: a truncated file, random bytes, an empty file
    whole = (day / "part-0.parquet").read_bytes()
    (day / "part-trunc.parquet").write_bytes(whole[: len(whole) // 2])
    (day / "part-junk.parquet").write_bytes(os.urandom(5000))
    (day / "part-empty.parquet").write_bytes(b"")
    # schema clashes: no video_id column; a title that is a list
    pq.write_table(pa.table({"title": ["a"] * 3, "uploader_id": ["u"] * 3, "upload_ts": pa.array([TS] * 3)}),
                   day / "part-noid.parquet")
    pq.write_table(pa.table({"video_id": ["l-0", "l-1"], "title": pa.array([["a"], ["b"]]), "uploader_id": ["u", "u"],
                             "upload_ts": pa.array([TS, TS])}), day / "part-list.parquet")

    res = _tag(spark, fx, D_FILES)
    assert res.status == "succeeded"
    writer, tags, quar = _check_day(spark, fx["conf"], D_FILES)
    assert writer == res.run_id
    ids = {r.video_id for r in tags}
    assert ids == {g["video_id"] for g in good} | {"ns-0", "ns-1", "s-0"}
    by_file = {json.loads(r.raw)["path"].rsplit("/", 1)[1]: r for r in quar if r.video_id is None}
    assert {k: v.reason for k, v in by_file.items()} == {
        "part-trunc.parquet": "unreadable_file", "part-junk.parquet": "unreadable_file",
        "part-empty.parquet": "unreadable_file", "part-noid.parquet": "schema_mismatch",
        "part-list.parquet": "schema_mismatch"}
    assert json.loads(by_file["part-noid.parquet"].raw)["rows"] == 3  # counted from the footer
    assert json.loads(by_file["part-junk.parquet"].raw)["rows"] is None
    assert "video_id" in by_file["part-noid.parquet"].detail and "title" in by_file["part-list.parquet"].detail
    assert all(r.detail for r in by_file.values())
    row = [r for r in quar if r.video_id == "s-1"]
    assert len(row) == 1 and row[0].reason.startswith("wrong_type")
    assert res.rows_read == len(good) + 2 + 2 + 3 + 2  # the footers of the schema clashes count
    run = _runs(spark, fx["conf"], D_FILES)[-1]
    assert "5 of 8 files quarantined" in run["message"]


def _corrupt_pages(path, column: str) -> None:
    """Overwrite the pages of ``column`` (every row group) in place; the footer stays as written."""
    meta = pq.ParquetFile(path).metadata
    data = bytearray(path.read_bytes())
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        col = next(rg.column(i) for i in range(rg.num_columns) if rg.column(i).path_in_schema == column)
        start = col.dictionary_page_offset or col.data_page_offset
        for k in range(start, start + col.total_compressed_size):
            data[k] = 0xAB if k % 2 else 0x5C
    path.write_bytes(bytes(data))


def test_a_file_with_corrupt_data_pages_is_quarantined_whole(spark, fx):
    day = fx["dump"] / f"dt={D_PAGES}"
    good = _frame_rows("p", 6)
    write_dump_day(fx["dump"], D_PAGES, good)
    bad = day / "part-pages.parquet"
    n = 40
    pq.write_table(pa.table({"video_id": [f"pg-{i}" for i in range(n)], "title": [f"标题 {i}" for i in range(n)],
                             "uploader_id": ["u"] * n, "upload_ts": pa.array([TS] * n)}), bad)
    _corrupt_pages(bad, "title")
    assert pq.ParquetFile(bad).metadata.num_rows == n  # the footer is sound ...
    with pytest.raises((OSError, pa.ArrowException)):  # ... the pages are not
        pq.read_table(bad)

    res = _tag(spark, fx, D_PAGES)
    assert res.status == "succeeded" and res.rows_tagged == len(good)
    writer, tags, quar = _check_day(spark, fx["conf"], D_PAGES)
    assert writer == res.run_id and {r.video_id for r in tags} == {g["video_id"] for g in good}
    (entry,) = quar
    assert entry.video_id is None and entry.reason == "unreadable_file" and entry.detail.startswith("data pages")
    assert json.loads(entry.raw) == {"path": json.loads(entry.raw)["path"], "rows": n}
    assert json.loads(entry.raw)["path"].endswith("part-pages.parquet")
    assert res.rows_read == len(good) + n  # the footer's rows count in the invariant


# --------------------------------------------------------------------------- failures at commit points
@pytest.fixture(scope="module")
def first(spark, fx):
    """D_RERUN tagged once: the state every failed rerun must leave."""
    res = _tag(spark, fx, D_RERUN)
    writer, tags, quar = _check_day(spark, fx["conf"], D_RERUN)
    assert writer == res.run_id and len(quar) == fx["bad_rerun"]
    return res


@pytest.mark.parametrize("point", ["before_commit", "after_commit:video_tags_quarantine", "after_commit:video_tags"])
def test_a_failure_at_a_commit_point_leaves_the_previous_day(spark, fx, first, monkeypatch, point):
    monkeypatch.setenv("VTAG_FAULT_INJECT", f"{point}=raise")
    with pytest.raises(RuntimeError, match="injected fault"):
        _tag(spark, fx, D_RERUN)
    writer, tags, quar = _check_day(spark, fx["conf"], D_RERUN)
    assert writer == first.run_id and len(tags) == first.rows_tagged and len(quar) == fx["bad_rerun"]
    last = _runs(spark, fx["conf"], D_RERUN)[-1]
    assert last["status"] == "failed" and "injected fault" in last["message"]
    if point == "before_commit":
        assert "nothing was committed" in last["message"]
    else:
        assert "rolled back" in last["message"]


def test_a_commit_that_lands_but_whose_call_fails_is_rolled_back(spark, fx, first, monkeypatch):
    import vtag.jobs.pipeline.publish

    real, fired = vtag.jobs.pipeline.publish.replace_day, []

    def lands_then_fails(df, conf, name, dt, **kw):  # e.g. the reply of a commit lost after it landed
        real(df, conf, name, dt, **kw)
        if name == "video_tags_quarantine" and not fired:
            fired.append(name)
            raise OSError("connection reset after the commit")

    # the run's commits look replace_day up in vtag.jobs.pipeline.publish (its rollback, restore_day, in publish_state)
    monkeypatch.setattr(vtag.jobs.pipeline.publish, "replace_day", lands_then_fails)
    with pytest.raises(OSError):
        _tag(spark, fx, D_RERUN)
    assert _check_day(spark, fx["conf"], D_RERUN)[0] == first.run_id
    assert "rolled back video_tags_quarantine" in _runs(spark, fx["conf"], D_RERUN)[-1]["message"]


def test_a_bundle_failing_in_the_workers_writes_nothing(spark, fx, first):
    import yaml

    broken = fx["root"] / "bundle-tampered"
    shutil.copytree(fx["bundle"], broken)
    cfg = yaml.safe_load((broken / "config.yaml").read_text(encoding="utf-8"))
    cfg["tampered"] = True  # the recorded model version no longer matches: Predictor.load refuses in the workers
    (broken / "config.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    with pytest.raises(Exception, match="hash"):
        _tag(spark, fx, D_RERUN, bundle=broken)
    writer, _, _ = _check_day(spark, fx["conf"], D_RERUN)
    assert writer == first.run_id
    assert _runs(spark, fx["conf"], D_RERUN)[-1]["status"] == "failed"


def test_the_audit_stops_duplicates_before_any_table_changes(spark, fx, first, monkeypatch):
    import vtag.jobs.pipeline.day

    real = vtag.jobs.pipeline.day.model_input
    monkeypatch.setattr(vtag.jobs.pipeline.day, "model_input", lambda rows, joined: real(rows, joined).unionByName(
        real(rows, joined).limit(1)))  # one video twice, as the duplicated cover join once did
    with pytest.raises(Exception, match="repeat a video_id"):
        _tag(spark, fx, D_RERUN)
    writer, _, _ = _check_day(spark, fx["conf"], D_RERUN)
    assert writer == first.run_id
    last = _runs(spark, fx["conf"], D_RERUN)[-1]
    assert last["status"] == "failed" and "AuditError" in last["message"]


# --------------------------------------------------------------------------- killed runs
def _kill(spark, fx, monkeypatch, point):
    from vtag.jobs.pipeline.publish import AbandonRun

    monkeypatch.setenv("VTAG_FAULT_INJECT", f"{point}=abandon")
    with pytest.raises(AbandonRun):
        _tag(spark, fx, D_RERUN)
    monkeypatch.delenv("VTAG_FAULT_INJECT")
    killed = _runs(spark, fx["conf"], D_RERUN)[-1]
    assert killed["status"] == "started"
    return killed["run_id"]


def _status(spark, fx, run_id):
    return {r["run_id"]: r for r in _runs(spark, fx["conf"], D_RERUN)}[run_id]


def test_killed_between_commits_then_the_next_run_rolls_back_and_records_it(spark, fx, first, monkeypatch):
    from vtag.jobs.pipeline.publish_state import day_rows

    before = _check_day(spark, fx["conf"], D_RERUN)[0]
    killed = _kill(spark, fx, monkeypatch, "after_commit:video_tags_quarantine")
    # the window of the two-commit protocol: the quarantine is the killed run's, video_tags the old
    q_runs = {r.run_id for r in day_rows(spark, fx["conf"], "video_tags_quarantine", D_RERUN).collect()}
    assert q_runs == {killed}
    res = _tag(spark, fx, D_RERUN)
    assert _check_day(spark, fx["conf"], D_RERUN)[0] == res.run_id != before
    k = _status(spark, fx, killed)
    assert k["status"] == "killed" and "rolled back video_tags_quarantine" in k["message"]
    assert killed in _status(spark, fx, res.run_id)["message"]  # the next run says what it found


def test_repair_finishes_a_run_killed_between_commits(spark, fx, first, monkeypatch):
    from vtag.jobs.pipeline.tag import repair

    killed = _kill(spark, fx, monkeypatch, "after_commit:video_tags_quarantine")
    done = repair(spark, fx["conf"], D_RERUN)
    assert [(d.run_id, d.action, d.status) for d in done] == [(killed, "finished", "succeeded")]
    assert _check_day(spark, fx["conf"], D_RERUN)[0] == killed
    assert "finished it from its staged rows" in _status(spark, fx, killed)["message"]
    assert repair(spark, fx["conf"], D_RERUN) == []  # nothing left to repair


def test_repair_rollback_undoes_a_run_killed_after_both_commits(spark, fx, first, monkeypatch):
    from vtag.jobs.pipeline.publish_state import day_rows
    from vtag.jobs.pipeline.tag import repair

    before = _check_day(spark, fx["conf"], D_RERUN)[0]
    killed = _kill(spark, fx, monkeypatch, "after_publish")
    for table in ("video_tags", "video_tags_quarantine"):  # both tables already hold the killed run's rows
        assert {r.run_id for r in day_rows(spark, fx["conf"], table, D_RERUN).collect()} == {killed}
    done = repair(spark, fx["conf"], D_RERUN, rollback=True)
    assert [(d.action, d.status) for d in done] == [("rolled_back", "killed")]
    assert _check_day(spark, fx["conf"], D_RERUN)[0] == before


def test_a_run_killed_before_publishing_is_recorded_as_killed(spark, fx, first, monkeypatch):
    from vtag.jobs.pipeline.tag import repair

    before = _check_day(spark, fx["conf"], D_RERUN)[0]
    killed = _kill(spark, fx, monkeypatch, "after_stage")
    done = repair(spark, fx["conf"], D_RERUN)
    assert [(d.run_id, d.action, d.status) for d in done] == [(killed, "nothing_written", "killed")]
    assert _check_day(spark, fx["conf"], D_RERUN)[0] == before


# --------------------------------------------------------------------------- covers
def _png(w, h) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_cover_uris_stay_inside_the_root(spark, fx, tmp_path):
    cover_dir = fx["dump"] / "covers" / f"dt={D_COVERS}"
    cover_dir.mkdir(parents=True)
    (cover_dir / "x.jpg").write_bytes(jpeg_bytes())
    (cover_dir / "y.jpg").write_bytes(jpeg_bytes((10, 10, 200)))
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(jpeg_bytes())
    d = str(cover_dir)
    base = _frame_rows("c", 1)[0]
    uris = {
        "in": f"{d}/x.jpg", "dotdot": f"{d}/../dt={D_COVERS}/x.jpg", "file3": f"file://{d}/y.jpg",
        "file1": f"file:{d}/./y.jpg", "passwd": "file:///etc/passwd", "outside": str(outside),
        "escape": f"{d}/../../../{outside.name}", "relative": "covers/x.jpg", "nodir": f"{d}/nope/x.jpg",
        "nofile": f"{d}/nope.jpg",
    }
    rows = [{**base, "video_id": k, "cover": None, "cover_uri": v} for k, v in uris.items()]
    write_dump_day(fx["dump"], D_COVERS, rows)
    res = _tag(spark, fx, D_COVERS)
    assert res.status == "succeeded" and res.rows_tagged == len(uris)
    writer, tags, _ = _check_day(spark, fx["conf"], D_COVERS)
    missing = {r.video_id: r.cover_missing for r in tags}
    assert missing == {"in": False, "dotdot": False, "file3": False, "file1": False, "passwd": True,
                       "outside": True, "escape": True, "relative": True, "nodir": True, "nofile": True}

    # the other policy: outside the root (and relative) is quarantined with its own code
    conf = {**fx["conf"], "cover_outside_root": "quarantine"}
    res = _tag(spark, fx, D_COVERS, conf=conf)
    writer, tags, quar = _check_day(spark, conf, D_COVERS)
    assert {r.video_id: r.reason for r in quar} == {k: "cover_outside_root" for k in
                                                   ("passwd", "outside", "escape", "relative")}
    assert all(r.detail for r in quar) and {r.video_id for r in tags} == {"in", "dotdot", "file3", "file1", "nodir",
                                                                         "nofile"}


def test_symlinked_covers_leaving_the_root_are_not_read(spark, fx, tmp_path):
    from vtag.jobs.pipeline.covers import cover_root, cover_sources

    cover_dir = fx["dump"] / "covers" / f"dt={D_LINKS}"
    cover_dir.mkdir(parents=True)
    (cover_dir / "x.jpg").write_bytes(jpeg_bytes())
    outside = tmp_path / "outside.jpg"  # a sound JPEG outside the dump root: it would decode if read
    outside.write_bytes(jpeg_bytes((200, 10, 10)))
    (cover_dir / "in-link.jpg").symlink_to(cover_dir / "x.jpg")
    (cover_dir / "out-link.jpg").symlink_to(outside)
    (cover_dir / "passwd.jpg").symlink_to("/etc/passwd")
    d = str(cover_dir)
    base = _frame_rows("l", 1)[0]
    names = {"in": "x.jpg", "in-link": "in-link.jpg", "out-link": "out-link.jpg", "passwd": "passwd.jpg"}
    rows = [{**base, "video_id": k, "cover": None, "cover_uri": f"{d}/{v}"} for k, v in names.items()]
    write_dump_day(fx["dump"], D_LINKS, rows)
    # what Spark reads of the directory: its files, never the links that leave the root
    root = cover_root(fx["conf"], str(fx["dump"]))
    assert cover_sources(spark, [d], root) == [f"{d}/in-link.jpg", f"{d}/x.jpg"]

    res = _tag(spark, fx, D_LINKS)
    assert res.status == "succeeded" and res.rows_tagged == len(rows)
    _, tags, _ = _check_day(spark, fx["conf"], D_LINKS)
    assert {r.video_id: r.cover_missing for r in tags} == {"in": False, "in-link": False, "out-link": True,
                                                           "passwd": True}
    conf = {**fx["conf"], "cover_outside_root": "quarantine"}
    _tag(spark, fx, D_LINKS, conf=conf)
    _, tags, quar = _check_day(spark, conf, D_LINKS)
    assert {r.video_id: r.reason for r in quar} == {"out-link": "cover_outside_root", "passwd": "cover_outside_root"}
    assert all("symlink" in r.detail for r in quar) and {r.video_id for r in tags} == {"in", "in-link"}


def test_a_huge_png_is_not_decoded_by_validation(monkeypatch):
    import PIL.Image

    from vtag.jobs.pipeline.validate import cover_decodes

    big = _png(6400, 6400)  # 41 Mpx > the model's 40 Mpx limit: a missing cover, never decoded
    loads = []
    real_load = PIL.ImageFile.ImageFile.load
    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", lambda self: loads.append(self.size) or real_load(self))
    assert cover_decodes(pd.Series([big, _png(8, 8)])).tolist() == [True, True]
    assert loads == [(8, 8)]
    assert PIL.Image.MAX_IMAGE_PIXELS  # untouched


# --------------------------------------------------------------------------- two runs of one day at once
def test_two_runs_of_one_day_at_once(spark, fx, monkeypatch):
    good = _frame_rows("w", 8)
    write_dump_day(fx["dump"], D_RACE, good)
    # both runs hold before their commits so that they overlap there
    monkeypatch.setenv("VTAG_FAULT_INJECT", "before_commit=sleep:3")
    results, errors = {}, {}

    def go(name):
        try:
            results[name] = _tag(spark, fx, D_RACE, run_id=f"race-{name}")
        except Exception as exc:  # noqa: BLE001
            errors[name] = exc

    threads = [threading.Thread(target=go, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert len(results) == 1 and len(errors) == 1, (results, errors)
    (winner,) = results.values()
    (loser_exc,) = errors.values()
    assert "SupersededError" in type(loser_exc).__name__
    assert _check_day(spark, fx["conf"], D_RACE)[0] == winner.run_id
    statuses = sorted((r["run_id"], r["status"]) for r in _runs(spark, fx["conf"], D_RACE))
    assert sorted(s for _, s in statuses) == ["failed", "succeeded"]
