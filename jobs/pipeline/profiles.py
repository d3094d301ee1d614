"""``vtag profiles refresh``: the ``uploader_profiles`` table, the relational signal of DESIGN.md.

A profile counts the categories of an uploader's earlier videos, per ``(uploader_id,
taxonomy_version)`` (the version the bundle was trained on): ``leaf_counts`` by each video's primary
node, ``level1_counts`` by that node's level-1 ancestor, ``n_videos`` their total. The videos
(:mod:`vtag.jobs.pipeline.profile_sources`) are the ``video_tags`` rows of that version up to day D
(``score >= profiles.min_score``, each counted by its score with ``profiles.count: score``, the
default: an expected count, so an unsure tag weighs little; 1 with ``count: one``; the uploader
looked up in the day's dump, since ``video_tags`` has no uploader column: the dumps are kept anyway,
``vtag retag`` re-infers from them, and a tagged day whose dump is gone is not counted and reported)
and every day of the labeled dump ``profiles.labels_root`` (1 each).
A video counts once. A profile's ``source`` is ``tags`` when any of its videos came from
``video_tags``, else ``labels``.

**Refresh** (:func:`refresh_profiles`, run by ``vtag tag`` after each successful day and by
``vtag profiles refresh --date D``): the whole table is recomputed from the sources through day D
and written as **one overwrite commit**. Overwrite rather than MERGE: every row is recomputed anyway,
so an overwrite is idempotent by construction (the same inputs give the same table, rerun or not),
drops uploaders that no longer qualify (a re-tagged day lowered their scores) and the rows of other
taxonomy versions (after ``vtag retag``), all of which a MERGE would need extra delete clauses for;
readers see the previous or the new table, never a mix. The commit's ``userMetadata`` records the
day and settings it was computed with.

**What tagging day D sees** (:func:`profiles_for_day`): profiles of days ``< D`` only, never the day
being tagged. When the table's last refresh was through D-1 with the same settings (the nightly
case) the table is joined as it is; otherwise (a rerun of D or of an earlier day, a gap after a
failed day, changed settings) the profiles through D-1 are computed on the fly with the same code.
Either way the input of day D is a function of the days before D alone, so a rerun of a day sees
what its first run saw. A refresh after rerunning an earlier day E writes the profiles through E
(never days after the day just tagged); the next night then computes its profiles on the fly once.
Two days tagged at once (``max_active_runs`` > 1) each see the days published before them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from vtag.jobs.config import add_job_conf_args
from vtag.jobs.pipeline.profile_sources import aggregate, labeled_videos, skipped_labeled_rows, tagged_videos
from vtag.models.schema import PROFILE_INPUT_FIELDS

log = logging.getLogger(__name__)

TABLE = "uploader_profiles"
#: the join's columns: table column -> model input column (vtag.models.schema.PROFILE_INPUT_FIELDS)
INPUT_COLUMNS = {f.name.removeprefix("profile_"): f.name for f in PROFILE_INPUT_FIELDS}
#: Delta operations that change a table's rows (OPTIMIZE, VACUUM and comment changes do not)
_DATA_OPERATIONS = {"WRITE", "MERGE", "DELETE", "UPDATE", "TRUNCATE", "RESTORE", "STREAMING UPDATE",
                    "CREATE TABLE AS SELECT", "REPLACE TABLE AS SELECT", "CREATE OR REPLACE TABLE AS SELECT"}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class ProfileVersionError(RuntimeError):
    """``uploader_profiles`` holds rows of another taxonomy version than the bundle's."""


@dataclass(frozen=True)
class ProfileSettings:
    """The job conf's ``profiles:`` section.

    Parameters
    ----------
    enabled : bool
        Join the profiles before inference and refresh them after each tag run.
    min_score : float
        Only ``video_tags`` rows with ``score >= min_score`` are counted.
    labels_root : str or None
        A labeled dump root whose rows (all days) are counted too.
    count : {"score", "one"}
        A counted ``video_tags`` row adds its score (an expected count) or 1.
    """

    enabled: bool = True
    min_score: float = 0.0
    labels_root: str | None = None
    count: str = "score"


@dataclass
class JoinProfiles:
    """The profiles one tagged day is joined with: ``frame`` (``uploader_id`` + the input columns),
    computed ``through`` the day before, taken from the ``table`` or ``computed`` on the fly."""

    frame: Any
    through: str
    how: str

    def describe(self) -> str:
        return f"joined {'the table' if self.how == 'table' else 'profiles computed'} through {self.through}"


@dataclass
class ProfileRefresh:
    """What one refresh wrote."""

    dt: str
    taxonomy_version: str
    uploaders: int
    labels_only: int
    videos: float
    seconds: float
    days_without_dump: list[str] = field(default_factory=list)
    #: rows of ``profiles.labels_root`` not counted, by reason (:func:`skipped_labeled_rows`); {} without it
    labels_skipped: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        text = (f"refreshed through {self.dt}: {self.uploaders} uploaders ({self.labels_only} from labels only), "
                f"{self.videos:.1f} videos counted")
        if self.days_without_dump:
            text += f"; tags of {len(self.days_without_dump)} day(s) not counted, dump gone: {self.days_without_dump[:5]}"
        if any(self.labels_skipped.values()):
            text += "; labeled rows not counted: " + ", ".join(
                f"{n} {k.replace('_', ' ')}" for k, n in self.labels_skipped.items() if n)
        return text


# ----------------------------------------------------------------------------------- settings
def _flag(key: str, value: Any) -> bool:
    """A conf value as a bool (``true``/``false``, ``1``/``0``, ``yes``/``no``, ``on``/``off``).

    Parameters
    ----------
    key : str
        The key under ``profiles`` (for the error message).
    value : Any
        A YAML bool or an override string.
    """
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"profiles.{key}: expected true or false, got {value!r}")


def profile_settings(conf: dict[str, Any]) -> ProfileSettings:
    """Read and check the ``profiles`` section of a job conf (defaults for absent keys).

    Parameters
    ----------
    conf : dict
        The job conf (:func:`vtag.jobs.config.load_job_conf`); ``--conf profiles.min_score=0.7`` lands in
        the same section.
    """
    from vtag.jobs.config import ConfigError

    section = conf.get("profiles") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"profiles: expected a mapping, got {section!r}")
    unknown = sorted(set(section) - {"enabled", "min_score", "labels_root", "count"})
    if unknown:
        raise ConfigError(f"unknown job conf key(s) {['profiles.' + k for k in unknown]}: "
                          "profiles takes enabled, min_score, labels_root, count")
    try:
        enabled = _flag("enabled", section.get("enabled", True))
        min_score = float(section.get("min_score", 0.0))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    from vtag.models.replay import check_count_settings  # the replay counts as the refresh does

    count = str(section.get("count", "score")).strip().lower()
    try:
        check_count_settings(min_score, count)
    except ValueError as exc:
        raise ConfigError(f"profiles.min_score must be within [0, 1] and profiles.count score or one: {exc}") from None
    root = section.get("labels_root")
    root = None if root is None or str(root).strip().lower() in ("", "null", "none") else str(root)
    return ProfileSettings(enabled, min_score, root, count)


def bundle_taxonomy(bundle: str):
    """The taxonomy a bundle was trained on (its ``taxonomy.yaml`` snapshot)."""
    from vtag.hierarchy.taxonomy import Taxonomy

    path = Path(bundle) / "taxonomy.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{bundle} is not a model bundle: {path.name} is missing")
    return Taxonomy.load(path)


# ----------------------------------------------------------------------------------- refresh
def compute_profiles(spark, conf: dict[str, Any], through: str, taxonomy, dump_root: str) -> tuple[Any, list[str]]:
    """The profiles from the days up to ``through`` (and the labeled data), not written anywhere.

    Parameters
    ----------
    spark : SparkSession
    conf : dict
        The job conf (warehouse, ``profiles`` section).
    through : str
        Last ``video_tags`` day counted, YYYY-MM-DD.
    taxonomy : Taxonomy
        The bundle's taxonomy: its version selects the tags, its tree maps labels to level 1.
    dump_root : str
        Dump root for the uploaders of tagged videos.

    Returns
    -------
    (DataFrame in the ``uploader_profiles`` columns, tagged days whose dump is gone)
    """
    settings = profile_settings(conf)
    videos, missing = tagged_videos(spark, conf, through, taxonomy.version, settings.min_score, dump_root,
                                    settings.count)
    if settings.labels_root:
        videos = videos.unionByName(labeled_videos(spark, settings.labels_root, taxonomy))
    return aggregate(videos, taxonomy.version, through), missing


def _signature(conf: dict[str, Any], through: str, version: str, dump_root: str) -> dict[str, Any]:
    """What a refresh's result depends on; stored in its commit, compared before the table is reused.

    Parameters
    ----------
    conf : dict
        The job conf (``profiles`` section).
    through : str
        The last day counted.
    version : str
        The taxonomy version built.
    dump_root : str
        Where the uploaders were looked up.
    """
    s = profile_settings(conf)
    return {"job": "profiles", "through": through, "taxonomy_version": version, "min_score": s.min_score,
            "count": s.count, "labels_root": s.labels_root, "dump_root": str(dump_root)}


def refresh_profiles(spark, conf: dict[str, Any], dt: str, *, taxonomy=None, dump_root: str | None = None,
                     run_id: str | None = None) -> ProfileRefresh:
    """Recompute ``uploader_profiles`` from the days up to ``dt`` and replace the table in one commit.

    Parameters
    ----------
    spark : SparkSession
    conf : dict
        The job conf (warehouse, dump_root, bundle, taxonomy, ``profiles`` section).
    dt : str
        The last day counted, YYYY-MM-DD (the day just tagged); it becomes ``updated_dt``.
    taxonomy : Taxonomy, optional
        The version to build; default :func:`resolve_taxonomy` of the conf.
    dump_root : str, optional
        Default: the conf's ``dump_root``.
    """
    from pyspark.sql import functions as F

    from vtag.jobs.warehouse.tables import conform, ensure_table, with_retries

    date.fromisoformat(dt)
    t0 = time.time()
    taxonomy = taxonomy if taxonomy is not None else resolve_taxonomy(conf)
    dump_root = str(dump_root or conf["dump_root"])
    profiles, missing = compute_profiles(spark, conf, dt, taxonomy, dump_root)
    path = ensure_table(spark, conf, TABLE)
    meta = json.dumps({**_signature(conf, dt, taxonomy.version, dump_root), "run_id": run_id})
    out = conform(profiles, TABLE)
    with_retries(lambda: out.write.format("delta").mode("overwrite").option("userMetadata", meta).save(path))
    stats = (spark.read.format("delta").load(path)
             .agg(F.count("*").alias("n"), F.sum((F.col("source") == "labels").cast("int")).alias("labels"),
                  F.sum("n_videos").alias("videos")).first())
    labels_root = profile_settings(conf).labels_root
    skipped = skipped_labeled_rows(spark, labels_root, taxonomy) if labels_root else {}
    result = ProfileRefresh(dt, taxonomy.version, int(stats.n), int(stats.labels or 0), float(stats.videos or 0.0),
                            time.time() - t0, missing, skipped)
    log.info("uploader_profiles %s (%.1fs)", result.describe(), result.seconds)
    if missing:
        log.warning("uploader_profiles: no dump under %s for tagged day(s) %s: their tags are not counted", dump_root, missing)
    if skipped.get("unknown_label"):
        log.warning("uploader_profiles: %d rows of %s have no primary label in taxonomy %s: not counted",
                    skipped["unknown_label"], labels_root, taxonomy.version)
    return result


def resolve_taxonomy(conf: dict[str, Any], taxonomy_path: str | None = None, bundle: str | None = None):
    """The taxonomy profiles are built for: ``taxonomy_path``, else the bundle's snapshot (``bundle``
    or the conf's), else the conf's ``taxonomy`` file.

    Parameters
    ----------
    conf : dict
        The job conf.
    taxonomy_path, bundle : str, optional
        Command-line choices that win over the conf.
    """
    from vtag.hierarchy.taxonomy import Taxonomy

    if taxonomy_path:
        return Taxonomy.load(taxonomy_path)
    bundle = bundle or conf.get("bundle")
    if bundle and (Path(str(bundle)) / "taxonomy.yaml").exists():
        return bundle_taxonomy(str(bundle))
    if conf.get("taxonomy"):
        return Taxonomy.load(conf["taxonomy"])
    raise FileNotFoundError("no taxonomy for the profiles: pass --taxonomy or --bundle")


# ----------------------------------------------------------------------------------- the join
def check_table_version(spark, conf: dict[str, Any], version: str) -> None:
    """Refuse a profile table holding rows of another taxonomy version (an empty or absent table is fine).

    Parameters
    ----------
    spark : SparkSession
    conf : dict
        The job conf (warehouse).
    version : str
        The bundle's taxonomy version.
    """
    from delta.tables import DeltaTable

    from vtag.jobs.warehouse.tables import table_path

    path = table_path(conf, TABLE)
    if not DeltaTable.isDeltaTable(spark, path):
        return
    found = [r[0] for r in spark.read.format("delta").load(path).select("taxonomy_version").distinct().limit(10).collect()]
    other = sorted(str(v) for v in found if v != version)
    if other:
        raise ProfileVersionError(
            f"{TABLE} at {path} holds profiles of taxonomy version(s) {other}, the bundle was trained on {version}: "
            "rebuild it with `vtag profiles refresh --date <last tagged day> --bundle <this bundle>` (e.g. after "
            "`vtag retag run`), or tag without profiles (--conf profiles.enabled=false)"
        )


def _last_data_commit(spark, path: str) -> dict[str, Any] | None:
    """The ``userMetadata`` (parsed) of the newest commit that changed the table's rows, if it is a refresh's.

    A refresh whose result equals an empty table leaves no commit (Delta skips it): the next day then
    computes its profiles instead of reusing the table, which is the same content.

    Parameters
    ----------
    spark : SparkSession
    path : str
        The ``uploader_profiles`` table.
    """
    from delta.tables import DeltaTable

    for row in DeltaTable.forPath(spark, path).history(50).orderBy("version", ascending=False).collect():
        if row.operation not in _DATA_OPERATIONS:
            continue
        try:
            meta = json.loads(row.userMetadata or "null")
        except ValueError:
            return None
        return meta if isinstance(meta, dict) else None
    return None


def profiles_for_day(spark, conf: dict[str, Any], dt: str, taxonomy, dump_root: str) -> JoinProfiles:
    """The profiles tagging day ``dt`` is joined with: those of the days before ``dt`` only.

    Parameters
    ----------
    spark : SparkSession
    conf : dict
        The job conf.
    dt : str
        The day being tagged, YYYY-MM-DD.
    taxonomy : Taxonomy
        The bundle's taxonomy; a table of another version is refused (:class:`ProfileVersionError`).
    dump_root : str
        Dump root for the uploaders of tagged videos (also part of the table's settings check).
    """
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from vtag.jobs.warehouse.tables import table_path

    check_table_version(spark, conf, taxonomy.version)
    through = (date.fromisoformat(dt) - timedelta(days=1)).isoformat()
    path = table_path(conf, TABLE)
    meta = _last_data_commit(spark, path) if DeltaTable.isDeltaTable(spark, path) else None
    wanted = _signature(conf, through, taxonomy.version, dump_root)
    if meta is not None and all(meta.get(k) == v for k, v in wanted.items()):
        frame, how = spark.read.format("delta").load(path), "table"
    else:
        frame, how = compute_profiles(spark, conf, through, taxonomy, dump_root)[0], "computed"
    cols = [F.col(src).alias(dst) for src, dst in INPUT_COLUMNS.items()]
    return JoinProfiles(frame.select("uploader_id", *cols), through, how)


def join_profiles(rows, profiles):
    """``rows`` plus the profile input columns of their ``uploader_id`` (null without a profile).

    Parameters
    ----------
    rows : DataFrame
        The day's valid rows (``uploader_id`` among the columns); the row count is unchanged.
    profiles : DataFrame
        One row per ``uploader_id`` with the :data:`INPUT_COLUMNS` values (:attr:`JoinProfiles.frame`),
        broadcast to the rows.
    """
    from pyspark.sql import functions as F

    return rows.join(F.broadcast(profiles), on="uploader_id", how="left")


# ----------------------------------------------------------------------------------- CLI
def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vtag profiles", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("refresh", help="recompute uploader_profiles from the days up to --date (backfills, repair)")
    r.add_argument("--date", required=True, help="the last day counted, YYYY-MM-DD (becomes updated_dt)")
    r.add_argument("--dump-root", help="dump root for the uploaders of tagged videos (default: job conf dump_root)")
    r.add_argument("--bundle", help="the bundle whose taxonomy version is built (default: job conf bundle)")
    r.add_argument("--taxonomy", help="build for this taxonomy file instead of the bundle's")
    add_job_conf_args(r)
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def main(args: argparse.Namespace) -> int:
    from vtag.jobs.config import conf_from_args
    from vtag.jobs.spark.session import build_session

    try:
        conf = conf_from_args(args)
        date.fromisoformat(args.date)
        taxonomy = resolve_taxonomy(conf, args.taxonomy, args.bundle)
        spark = build_session(conf)
        result = refresh_profiles(spark, conf, args.date, taxonomy=taxonomy, dump_root=args.dump_root)
    except Exception as exc:  # noqa: BLE001 - one clear line for the operator
        print(f"vtag profiles refresh: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(asdict(result), ensure_ascii=False))
    else:
        print(f"uploader_profiles {result.describe()} in {result.seconds:.1f}s (taxonomy {result.taxonomy_version})")
    return 0
