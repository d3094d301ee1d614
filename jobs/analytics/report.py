"""``vtag report``: one self-contained HTML page about one day of tags (charts inline as PNG).

For day D (and D0, by default the previous day present in ``video_tags``): a pass/fail badge per
check of the quality gate (the run, rows read = tagged + quarantined, the quarantine rate, the
level-1 drift; thresholds as ``vtag quality``'s), tag counts per level-1 node and the top leaves,
score histograms (primary leaf; all labels by level), the share of ``cover_missing`` and the
quarantine rate over the last days the warehouse holds up to D (at most 14), quarantine reasons,
day-over-day drift per level (Jensen–Shannon divergence, base 2, of the level-h node distributions of
D and D0 over the primary paths; a video whose leaf is above level h counts as "no level-h node"),
the gate's thresholds drawn on the quarantine and drift charts, and the runs of the day from
``tag_runs``.

The numbers come from a handful of aggregate SQL queries written in the dialect both engines share,
so the report runs on DuckDB over delta-rs (default: no JVM, seconds) or on Spark through the catalog
(``--engine spark``, for warehouses delta-rs cannot reach). Only aggregates leave the engine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import date
from typing import Any, Callable

import pandas as pd

from vtag.jobs.analytics.report_data import NO_NODE, SCORE_BINS, TOP_LEAVES, TREND_DAYS, ReportData  # noqa: F401  (re-exported)
from vtag.jobs.config import add_job_conf_args
from vtag.jobs.pipeline.quality import js_divergence
from vtag.models.schema import MAX_LEVELS

Query = Callable[[str], pd.DataFrame]


class ReportError(ValueError):
    """The day is not in the warehouse, or the arguments are inconsistent."""


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--date", required=True, help="the day to report, YYYY-MM-DD")
    p.add_argument("--compare", help="the day to compare with (default: the previous day present)")
    p.add_argument("--out", required=True, help="the HTML file to write")
    add_job_conf_args(p)
    p.add_argument("--engine", choices=["duckdb", "spark"], default="duckdb", help="query engine (default %(default)s)")
    p.add_argument("--max-quarantine-rate", type=float, default=None,
                   help="the gate's highest quarantine rate drawn and checked (default: vtag quality's, 0.05)")
    p.add_argument("--max-drift", type=float, default=None,
                   help="the gate's highest level-1 JS divergence drawn and checked (default: vtag quality's, 0.1)")
    p.add_argument("--json", action="store_true", help="print the report's figures as one JSON object on stdout")
    return p


# ----------------------------------------------------------------------------------- the numbers
def _iso(d: str, what: str) -> str:
    try:
        return date.fromisoformat(d).isoformat()
    except (TypeError, ValueError):
        raise ReportError(f"{what} {d!r} is not a YYYY-MM-DD date") from None


def _lit(d: str) -> str:
    return f"DATE '{_iso(d, 'date')}'"


def level_distribution(leaves: pd.DataFrame, dt: str, level: int) -> dict[tuple, float]:
    """Counts of level-``level`` nodes (named by their path of names) on day ``dt``'s primary paths."""
    day = leaves[leaves.dt == dt]
    out: dict[tuple, float] = {}
    cols = [f"level{i}" for i in range(1, level + 1)]
    for key, n in zip(day[cols].itertuples(index=False, name=None), day["n"]):
        node = (NO_NODE,) if key[-1] is None or (isinstance(key[-1], float) and math.isnan(key[-1])) else key
        out[node] = out.get(node, 0) + float(n)
    return out


def drift_per_level(leaves: pd.DataFrame, day: str, compare: str | None) -> dict[int, float | None]:
    out: dict[int, float | None] = {}
    for h in range(1, MAX_LEVELS + 1):
        if compare is None:
            out[h] = None
            continue
        out[h] = js_divergence(level_distribution(leaves, day, h), level_distribution(leaves, compare, h))
    return out


def collect(q: Query, day: str, compare: str | None = None, max_quarantine_rate: float | None = None,
            max_drift: float | None = None) -> ReportData:
    """Run the report's queries through ``q`` (any engine with the catalog's names) for ``day``.

    Parameters
    ----------
    q
        SQL -> pandas frame on the warehouse.
    day
        The day to report, YYYY-MM-DD.
    compare
        The day to compare with (default: the previous day present).
    max_quarantine_rate, max_drift
        The gate's thresholds (default: ``vtag quality``'s).
    """
    from vtag.jobs.pipeline.quality import DEFAULT_MAX_DRIFT, DEFAULT_MAX_QUARANTINE_RATE

    day = _iso(day, "--date")
    days = [str(d) for d in q("SELECT DISTINCT CAST(dt AS STRING) AS dt FROM video_tags ORDER BY dt")["dt"]]
    if day not in days:
        raise ReportError(f"no video_tags rows for {day}; days present: {', '.join(days) or 'none'}")
    if compare is not None:
        compare = _iso(compare, "--compare")
        if compare == day:
            raise ReportError("--compare must be another day than --date")
        if compare not in days:
            raise ReportError(f"no video_tags rows for --compare {compare}; days present: {', '.join(days)}")
    else:
        earlier = [d for d in days if d < day]
        compare = earlier[-1] if earlier else None
    sel = [day] + ([compare] if compare else [])
    in_days = "(" + ", ".join(_lit(d) for d in sel) + ")"
    levels = ", ".join(f"level{i}" for i in range(1, MAX_LEVELS + 1))
    leaves = q(
        f"SELECT CAST(dt AS STRING) AS dt, leaf_id, {levels}, count(*) AS n FROM video_tags "
        f"WHERE dt IN {in_days} GROUP BY dt, leaf_id, {levels}"
    )
    bin_expr = f"CAST(least(greatest(floor(score * {SCORE_BINS}), 0), {SCORE_BINS - 1}) AS INT)"
    score_bins = q(
        f"SELECT CAST(dt AS STRING) AS dt, {bin_expr} AS bin, count(*) AS n FROM video_tags "
        f"WHERE dt IN {in_days} AND score IS NOT NULL GROUP BY 1, 2"
    )
    tag_score_bins = q(
        f"SELECT tag_level, {bin_expr.replace('score', 'tag_score')} AS bin, count(*) AS n FROM video_tag_labels "
        f"WHERE dt = {_lit(day)} AND tag_score IS NOT NULL GROUP BY 1, 2"
    )
    trend = [d for d in days if d <= day][-TREND_DAYS:]
    start = trend[0]
    cover = q(
        "SELECT CAST(dt AS STRING) AS dt, count(*) AS n, "
        "sum(CASE WHEN cover_missing THEN 1 ELSE 0 END) AS missing FROM video_tags "
        f"WHERE dt BETWEEN {_lit(start)} AND {_lit(day)} GROUP BY dt ORDER BY dt"
    )
    quarantine = q(
        f"SELECT reason, count(*) AS n FROM video_tags_quarantine WHERE dt = {_lit(day)} "
        "GROUP BY reason ORDER BY n DESC, reason"
    )
    runs = q(
        "SELECT run_id, job, status, rows_read, rows_tagged, rows_quarantined, seconds, taxonomy_version, "
        "model_version, CAST(started_at AS STRING) AS started_at, message FROM tag_runs "
        f"WHERE dt = {_lit(day)} ORDER BY started_at, run_id"
    )
    versions = q(
        "SELECT taxonomy_version, model_version, count(*) AS n FROM video_tags "
        f"WHERE dt = {_lit(day)} GROUP BY 1, 2 ORDER BY n DESC"
    )
    for frame in (leaves, score_bins, tag_score_bins, cover, quarantine, versions):
        if "n" in frame:
            frame["n"] = frame["n"].astype("int64")
    for c in ("rows_read", "rows_tagged", "rows_quarantined"):
        runs[c] = runs[c].astype("Int64")  # counts stay integers next to the nulls of a failed run
    for c in [f"level{i}" for i in range(1, MAX_LEVELS + 1)]:
        leaves[c] = leaves[c].astype(object).where(leaves[c].notna(), None)
    data = ReportData(day, compare, days, leaves, score_bins, tag_score_bins, cover, quarantine, runs, versions)
    data.drift = drift_per_level(leaves, day, compare)
    data.max_quarantine_rate = DEFAULT_MAX_QUARANTINE_RATE if max_quarantine_rate is None else float(max_quarantine_rate)
    data.max_drift = DEFAULT_MAX_DRIFT if max_drift is None else float(max_drift)
    data.quarantine_trend = quarantine_trend(q, start, day)
    return data


def quarantine_trend(q: Query, start: str, end: str) -> pd.DataFrame:
    """Per day of ``[start, end]``: the latest successful tag/retag run's rows read and quarantined,
    and their ratio (what ``vtag quality`` checks).

    Parameters
    ----------
    q
        SQL -> pandas frame on the warehouse.
    start, end
        The first and last day, YYYY-MM-DD.
    """
    runs = q(
        "SELECT CAST(dt AS STRING) AS dt, rows_read, rows_quarantined, CAST(started_at AS STRING) AS started_at, run_id "
        f"FROM tag_runs WHERE dt BETWEEN {_lit(start)} AND {_lit(end)} AND status = 'succeeded' "
        "AND job IN ('tag', 'retag') AND rows_read IS NOT NULL"
    )
    if not len(runs):
        return pd.DataFrame({"dt": [], "rows_read": [], "rows_quarantined": [], "rate": []})
    last = runs.sort_values(["dt", "started_at", "run_id"]).groupby("dt", as_index=False).tail(1)
    out = last[["dt", "rows_read", "rows_quarantined"]].astype({"rows_read": "int64", "rows_quarantined": "int64"})
    out["rate"] = out["rows_quarantined"] / out["rows_read"].where(out["rows_read"] > 0, 1)
    return out.sort_values("dt").reset_index(drop=True)


# ----------------------------------------------------------------------------------- engines
def duckdb_query(conf: dict[str, Any]) -> tuple[Query, Callable[[], None]]:
    from vtag.jobs.analytics.query import open_warehouse, run_query

    con = open_warehouse(conf)
    return (lambda s: run_query(con, s).to_pandas()), con.close


def spark_query(conf: dict[str, Any]) -> tuple[Query, Callable[[], None]]:
    from vtag.jobs.analytics.sql import prepare, session_conf
    from vtag.jobs.spark.session import build_session
    from vtag.jobs.warehouse.catalog import check_metastore_free

    conf = session_conf(conf)
    check_metastore_free(conf)
    spark = build_session(conf)
    prepare(spark, conf)
    return (lambda s: spark.sql(s).toPandas()), (lambda: None)


def build_report(q: Query, day: str, compare: str | None, out: str, max_quarantine_rate: float | None = None,
                 max_drift: float | None = None) -> ReportData:
    """Collect the numbers for ``day`` and write the page to ``out``.

    Parameters
    ----------
    q
        SQL -> pandas frame on the warehouse.
    day, compare
        The day to report and the day to compare with (None: the previous day present).
    out
        The HTML file to write.
    max_quarantine_rate, max_drift
        The gate's thresholds (default: ``vtag quality``'s).
    """
    from vtag.jobs.analytics.report_render import render_html

    data = collect(q, day, compare, max_quarantine_rate, max_drift)
    html = render_html(data)
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(html)
    return data


def summary(data: ReportData, out: str) -> dict[str, Any]:
    """The report's figures as plain JSON-ready values (``vtag report --json``).

    Parameters
    ----------
    data
        What :func:`collect` returned.
    out
        The HTML file written.
    """
    return {
        "out": out,
        "day": data.day,
        "compare": data.compare,
        "days": data.days,
        "tagged": data.n_tagged,
        "quarantined": data.n_quarantined,
        "quarantine": {str(r): int(n) for r, n in zip(data.quarantine["reason"], data.quarantine["n"])},
        "drift": {f"level{h}": v for h, v in data.drift.items()},
        "trend_days": data.trend_days,
        "checks": data.checks(),
        "ok": all(c["ok"] is not False for c in data.checks()),
    }


def main(args: argparse.Namespace) -> int:
    """Run ``vtag report``; returns the exit status (progress on stderr, the result on stdout).

    Parameters
    ----------
    args
        The parsed arguments of :func:`_arg_parser`.
    """
    from vtag.jobs.progress import command

    with command("vtag report"):
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    from vtag.jobs.analytics.query import QueryError
    from vtag.jobs.config import ConfigError, conf_from_args
    from vtag.jobs.progress import stage

    try:
        conf = conf_from_args(args)
        stage(f"opening the warehouse ({args.engine})")
        q, close = (duckdb_query if args.engine == "duckdb" else spark_query)(conf)
        stage(f"querying and drawing {args.date}")
    except (ConfigError, QueryError, ValueError, OSError) as exc:  # CatalogError is a ValueError
        print(f"vtag report: {exc}", file=sys.stderr)
        return 1
    try:
        data = build_report(q, args.date, args.compare, args.out, getattr(args, "max_quarantine_rate", None),
                            getattr(args, "max_drift", None))
    except (ReportError, QueryError, OSError) as exc:
        print(f"vtag report: {exc}", file=sys.stderr)
        return 1
    finally:
        close()
    if getattr(args, "json", False):
        print(json.dumps(summary(data, args.out), sort_keys=True))
        return 0
    vs = f" vs {data.compare}" if data.compare else " (no earlier day to compare)"
    print(f"{args.out}: {data.day}{vs}: {data.n_tagged} tagged, {data.n_quarantined} quarantined")
    return 0
