"""The warehouses the Spark tests read: plain functions, no pytest fixtures (``tests/conftest.py``
builds them once per session). Import them as ``from tests.warehouse_builders import ...``.

- :func:`build_warehouse`: the analysts' warehouse (three tag runs, a failed attempt, a re-tag,
  quarantine rows, commit times spread over the last days, an empty ``uploader_profiles``);
- :func:`tag_row`, :func:`spark_frame`, :class:`Shape` / :func:`demo_shape`;
- :func:`build_make_demo` runs the real `vtag demo` (what `make demo` runs) with :data:`SMALL_DEMO_ARGS`.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.builders import UTC, load_taxonomies

# ------------------------------------------------------------------------------------- warehouses
DAYS = ("2024-06-01", "2024-06-02", "2024-06-03")
RETAG_DAY = "2024-06-02"
VIDEOS_PER_DAY = 48
UPLOADERS = [f"u{i:02d}" for i in range(1, 9)]
#: the quarantine reasons of the analysts' warehouse (the first 3 + day index of them each day)
QUARANTINE_REASONS = ["duplicate_video_id", "undecodable_cover", "empty_content", "overlong", "null_video_id"]


@dataclass(frozen=True)
class Shape:
    """The days, ids and uploaders of a warehouse (the default: the analysts' test warehouse)."""

    days: tuple[str, ...] = DAYS
    retag_day: str = RETAG_DAY
    uploaders: tuple[str, ...] = tuple(UPLOADERS)
    #: (day, index in the day) -> video id; ids 0..7 come back every day (re-uploads)
    id_style: str = "fixture"

    def video_id(self, dt: str, day_index: int, i: int) -> str:
        if self.id_style == "fixture":
            return f"v{i:04d}" if i < 8 else f"v{day_index}{i:04d}"
        # the generator's ids (jobs/synth/rows.py): v<yyyymmdd><part:05d><row:06d>
        first = self.days[0] if i < 8 else dt
        return f"v{first.replace('-', '')}{0:05d}{i:06d}"

    def night(self, dt: str) -> datetime:
        return datetime.fromisoformat(dt).replace(tzinfo=UTC) + timedelta(days=1, hours=1)

    @property
    def retag_at(self) -> datetime:
        return datetime.fromisoformat(self.days[-1]).replace(tzinfo=UTC) + timedelta(days=2, hours=9)


def demo_shape() -> Shape:
    """The days, uploader and video ids `make demo` (`vtag demo` defaults) leaves: three days from
    2026-11-20, the generator's uploader ids (``up`` + a hash of seed and index, jobs/synth/world.py)."""
    import hashlib

    from vtag.jobs.cli.demo import _arg_parser

    defaults = _arg_parser().parse_args([])
    start = date.fromisoformat(defaults.start)
    days = tuple((start + timedelta(days=i)).isoformat() for i in range(defaults.days))
    ups = tuple("up" + hashlib.blake2b(f"{defaults.seed}:{u}".encode(), digest_size=5).hexdigest() for u in range(8))
    return Shape(days=days, retag_day=days[1], uploaders=ups, id_style="generator")


@dataclass
class Warehouse:
    """What :func:`build_warehouse` wrote (paths, conf, taxonomies, and every row as Python dicts)."""

    root: Path
    warehouse: Path
    dump_root: Path
    conf: dict[str, Any]
    taxonomy: Any
    taxonomy_v2: Any
    days: tuple[str, ...] = DAYS
    retag_day: str = RETAG_DAY
    rows: dict[str, list[dict]] = field(default_factory=dict)  # dt -> video_tags rows (final state)
    rows_before_retag: list[dict] = field(default_factory=list)  # RETAG_DAY rows before the re-tag
    quarantine: dict[str, list[dict]] = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)
    uploads: dict[str, list[dict]] = field(default_factory=dict)
    version_before_retag: int = 3


def tag_row(tax, leaf: str, rng: random.Random, dt: str, run_id: str, tagged_at: datetime, vid: str,
            cover_missing_p: float) -> dict:
    """One ``video_tags`` row tagging ``vid`` with ``leaf`` (its path's tags, sometimes an extra one).

    Parameters
    ----------
    tax
        The taxonomy of ``leaf``.
    leaf
        The primary leaf's id.
    rng
        Draws the scores, the extra tag and ``cover_missing``.
    dt
        The day, ``YYYY-MM-DD``.
    run_id
        The row's ``run_id``.
    tagged_at
        The row's ``tagged_at``.
    vid
        The video id.
    cover_missing_p
        Probability that ``cover_missing`` is true.
    """
    from vtag.models.schema import MAX_LEVELS

    path = tax.path(leaf)
    names = tax.path_names(leaf)
    score = round(rng.uniform(0.35, 0.99), 4)
    tags = []
    for depth, node in enumerate(path, start=1):
        s = min(1.0, score + (len(path) - depth) * rng.uniform(0.0, 0.05))
        tags.append({"node_id": node, "name": tax.node(node).name, "level": depth, "score": round(s, 4)})
    if rng.random() < 0.3:  # an extra tag from another level-1 subtree
        other = rng.choice([n for n in tax.nodes if n.level == 2 and n.parent != path[0]])
        tags.append({"node_id": other.parent, "name": tax.node(other.parent).name, "level": 1, "score": 0.6})
        tags.append({"node_id": other.id, "name": other.name, "level": 2, "score": 0.55})
    levels = {f"level{i}": (names[i - 1] if i <= len(names) else None) for i in range(1, MAX_LEVELS + 1)}
    return {
        "video_id": vid,
        "dt": date.fromisoformat(dt),
        "leaf_id": leaf,
        "path": path,
        "path_names": names,
        **levels,
        "score": score,
        "tags": tags,
        "cover_missing": rng.random() < cover_missing_p,
        "taxonomy_version": tax.version,
        "model_version": "demo-cpu-small-20240531",
        "run_id": run_id,
        "tagged_at": tagged_at,
    }


def spark_frame(spark, rows: list[dict], schema):
    """A Spark DataFrame of ``rows`` through Arrow.

    Parameters
    ----------
    spark
        The SparkSession.
    rows
        Dicts with the columns of ``schema``.
    schema
        A ``pyarrow.Schema`` (one of ``vtag.models.schema``'s).
    """
    import pyarrow as pa

    return spark.createDataFrame(pa.Table.from_pylist(rows, schema=schema))


def _plan_day(dt: str, day_index: int, rng: random.Random, leaves_by_l1: dict[str, list[str]], shape: Shape):
    """Videos of a day: id, uploader, leaf. Uploaders keep a favorite subtree; the third day drifts."""
    l1s = sorted(leaves_by_l1)
    uploaders = list(shape.uploaders)
    favorite = {u: l1s[i % len(l1s)] for i, u in enumerate(uploaders)}
    out = []
    for i in range(VIDEOS_PER_DAY):
        # ids 0..7 come back every day (re-uploads): video_tags_latest has work to do
        vid = shape.video_id(dt, day_index, i)
        uploader = uploaders[(i * 3 + day_index) % len(uploaders)]
        if day_index == 2 and i % 3 == 0:
            l1 = l1s[0]  # drift: the first subtree surges on the third day
        elif rng.random() < 0.75:
            l1 = favorite[uploader]
        else:
            l1 = rng.choice(l1s)
        out.append((vid, uploader, rng.choice(leaves_by_l1[l1])))
    return out


def _write_uploads(dump_root: Path, dt: str, plan, rng: random.Random) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vtag.models.schema import DUMP_SCHEMA

    rows = []
    for vid, uploader, leaf in plan:
        rows.append(
            {
                "video_id": vid,
                "title": f"视频{vid}·{leaf}",
                "description": None if rng.random() < 0.5 else "今天分享一下",
                "cover": None,
                "cover_uri": None,
                "uploader_id": uploader,
                "source_program": rng.choice(["app", "web", None]),
                "duration_s": rng.randint(5, 600),
                "upload_ts": datetime.fromisoformat(dt).replace(tzinfo=UTC) + timedelta(minutes=rng.randint(0, 1439)),
            }
        )
    day = dump_root / f"dt={dt}"
    day.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=DUMP_SCHEMA), day / "part-00000.parquet")
    (day / "_SUCCESS").write_text("")
    return rows


def _set_commit_times(table_dir: Path, times: dict[int, datetime]) -> None:
    for version, when in times.items():
        f = table_dir / "_delta_log" / f"{version:020d}.json"
        ts = when.timestamp()
        os.utime(f, (ts, ts))


def build_warehouse(spark, root: Path, shape: Shape = Shape()) -> Warehouse:
    """Write a small, realistic vtag warehouse under ``root`` for the analysts' tests (catalog, sql,
    query, docs, report), through ``vtag.jobs.warehouse.tables`` as the jobs write it.

    Three nightly tag runs (``shape.days``, one failed attempt on the third day before it succeeded),
    a taxonomy change (v2 adds a leaf) and a re-tag of ``shape.retag_day`` two days after the last
    day, quarantined rows with the generator's reasons, a Parquet dump (for ``video_uploads``), and
    Delta commit times spread over the last days (table created 4 days ago, one day's write a day,
    the re-tag 6 hours ago), so that ``TIMESTAMP AS OF current_timestamp() - INTERVAL 1 DAY`` lands
    before the re-tag (Delta refuses time travel past ``delta.deletedFileRetentionDuration``, 7 days
    by default, so the commit times cannot be those of the days the data is about);
    ``uploader_profiles`` created empty. Quarantine rows and runs go in one append each (the jobs
    commit per day and per run, and every commit costs seconds on a shared CI box).

    Parameters
    ----------
    spark
        The SparkSession (Delta configured).
    root
        An empty directory: ``warehouse/`` and ``dumps/`` are written under it.
    shape
        The days, ids and uploaders (:class:`Shape`; default: the analysts' test warehouse).
    """
    from vtag.jobs.config import load_job_conf
    from vtag.jobs.warehouse.tables import conform, ensure_table, replace_day, table_path, with_retries
    from vtag.models.schema import QUARANTINE_SCHEMA, TAG_RUNS_SCHEMA, VIDEO_TAGS_SCHEMA

    tax, tax2 = load_taxonomies()
    rng = random.Random(20240601)
    warehouse, dump_root = root / "warehouse", root / "dumps"
    conf = load_job_conf(
        overrides={"warehouse": str(warehouse), "dump_root": str(dump_root), "catalog_database": "vtag"}
    )
    wh = Warehouse(root, warehouse, dump_root, conf, tax, tax2, days=shape.days, retag_day=shape.retag_day)
    by_l1: dict[str, list[str]] = {}
    for leaf in tax.leaf_ids:
        by_l1.setdefault(tax.path(leaf)[0], []).append(leaf)
    # a handful of subtrees, a few leaves in each, the leaf of the v2 change included
    changed_leaf = tax.leaf_ids[0]
    chosen = sorted(by_l1, key=lambda k: (k != tax.path(changed_leaf)[0], k))[:5]
    leaves_by_l1 = {k: sorted(by_l1[k])[:6] for k in chosen}
    first = tax.path(changed_leaf)[0]
    if changed_leaf not in leaves_by_l1[first]:
        leaves_by_l1[first] = [changed_leaf] + leaves_by_l1[first][:5]

    for name in ("video_tags", "video_tags_quarantine", "tag_runs"):
        ensure_table(spark, conf, name)

    def run_record(run_id, job, dt, taxv, started, n_read, n_tagged, n_quar, status="succeeded", message=None, secs=41.5):
        rec = {
            "run_id": run_id,
            "job": job,
            "dt": dt,
            "taxonomy_version": taxv,
            "model_version": "demo-cpu-small-20240531",
            "rows_read": n_read,
            "rows_tagged": n_tagged,
            "rows_quarantined": n_quar,
            "started_at": started,
            "finished_at": started + timedelta(seconds=secs),
            "seconds": secs,
            "status": status,
            "message": message,
            "conf": json.dumps({"dump_root": str(dump_root)}),
        }
        wh.runs.append(rec)
        return rec

    for k, dt in enumerate(shape.days):
        plan = _plan_day(dt, k, rng, leaves_by_l1, shape)
        wh.uploads[dt] = _write_uploads(dump_root, dt, plan, rng)
        run_id = f"tag-{dt}-{k:02d}"
        started = shape.night(dt)
        rows = [tag_row(tax, leaf, rng, dt, run_id, started, vid, 0.1 if k < 2 else 0.25) for vid, _, leaf in plan]
        quar = [
            {
                "video_id": None if reason == "null_video_id" else f"q{k}{j:03d}",
                "dt": date.fromisoformat(dt),
                "raw": json.dumps({"video_id": f"q{k}{j:03d}", "title": "坏行"}, ensure_ascii=False),
                "reason": reason,
                "run_id": run_id,
            }
            for j, reason in enumerate(QUARANTINE_REASONS[: 3 + k] + ["duplicate_video_id"] * k)
        ]
        if k == 2:  # a failed attempt first (e.g. an executor lost), then the successful run
            run_record(f"tag-{dt}-failed", "tag", dt, tax.version, started - timedelta(minutes=30),
                       len(plan) + len(quar), None, None, "failed", "Py4JJavaError: executor lost", 300.0)
        replace_day(spark_frame(spark, rows, VIDEO_TAGS_SCHEMA), conf, "video_tags", dt)
        wh.rows[dt], wh.quarantine[dt] = rows, quar
        run_record(run_id, "tag", dt, tax.version, started, len(plan) + len(quar), len(rows), len(quar))

    # the taxonomy change: v2 adds a leaf beside `changed_leaf`; the re-tag moves some videos to it
    wh.rows_before_retag = wh.rows[shape.retag_day]
    new_leaf = f"{tax.node(changed_leaf).parent}_vtagnew"
    retag_id = f"retag-{shape.retag_day}-v2"
    retagged = []
    for i, r in enumerate(wh.rows_before_retag):
        moved = r["leaf_id"] == changed_leaf or (i % 4 == 0 and tax.path(r["leaf_id"])[0] == first)
        row = tag_row(tax2, new_leaf if moved else r["leaf_id"], rng, shape.retag_day, retag_id, shape.retag_at,
                      r["video_id"], 0.1)
        retagged.append(row)
    replace_day(spark_frame(spark, retagged, VIDEO_TAGS_SCHEMA), conf, "video_tags", shape.retag_day)
    wh.rows[shape.retag_day] = retagged
    n_q = len(wh.quarantine[shape.retag_day])
    run_record(retag_id, "retag", shape.retag_day, tax2.version, shape.retag_at, len(retagged) + n_q, len(retagged), n_q)
    # quarantine and runs in one append each (the jobs commit per day and per run; the tests read them
    # only at their latest version, and each commit costs seconds on a busy box)
    quar_all = [r for dt in shape.days for r in wh.quarantine[dt]]
    quar_df = conform(spark_frame(spark, quar_all, QUARANTINE_SCHEMA), "video_tags_quarantine")
    with_retries(lambda: quar_df.write.format("delta").mode("append").save(table_path(conf, "video_tags_quarantine")))
    runs = [dict(r, dt=date.fromisoformat(r["dt"])) for r in wh.runs]
    runs_df = conform(spark_frame(spark, runs, TAG_RUNS_SCHEMA), "tag_runs")
    with_retries(lambda: runs_df.write.format("delta").mode("append").save(table_path(conf, "tag_runs")))

    # commit times: created 4 days ago, a day's write each day, the re-tag 6 hours ago
    now = datetime.now(UTC)
    times = {0: now - timedelta(days=4)}
    times.update({i + 1: now - timedelta(days=3 - i, hours=12 if i == len(shape.days) - 1 else 0)
                  for i in range(len(shape.days))})
    times[len(shape.days) + 1] = now - timedelta(hours=6)
    _set_commit_times(warehouse / "video_tags", times)
    wh.version_before_retag = len(shape.days)
    # uploader_profiles exists, with its comments, and holds no rows: no test of this warehouse reads
    # them (the docs test's `vtag demo` warehouse has real ones); a refresh costs seconds
    ensure_table(spark, conf, "uploader_profiles")
    return wh


# ------------------------------------------------------------------------------------- the real `vtag demo`
#: `vtag demo` arguments of the docs test: the code of `make demo` with fewer rows and a short training
SMALL_DEMO_ARGS = ["--rows-per-day", "150", "--train-rows", "400", "--train-minutes", "0.2"]


@dataclass
class DemoRun:
    """A warehouse built by :func:`vtag.jobs.cli.demo.run_demo` (what `make demo` runs)."""

    root: Path
    conf: Any
    days: tuple[str, ...]
    results: dict  # dt -> the tag run's result
    seconds: float


def build_make_demo(spark, root: Path, extra_args: list[str] | None = None) -> DemoRun:
    """Run `vtag demo`'s generate, train and tag steps into ``root`` on the session ``spark``.

    Parameters
    ----------
    spark
        The SparkSession.
    root
        The demo's work directory (``--workdir``); the warehouse is ``root / "warehouse"``.
    extra_args
        More `vtag demo` arguments, after :data:`SMALL_DEMO_ARGS`.
    """
    import time

    from vtag.jobs.cli.demo import _arg_parser, run_demo
    from vtag.jobs.config import load_job_conf

    args = _arg_parser().parse_args([*SMALL_DEMO_ARGS, *(extra_args or []), "--workdir", str(root)])
    conf = load_job_conf(overrides={"warehouse": str(root / "warehouse")})
    t0 = time.time()
    results = run_demo(spark, conf, args)
    return DemoRun(root, conf, tuple(results), results, time.time() - t0)
