"""The settings of a ``vtag_retag`` run: the months of its range and the ``vtag retag`` / ``vtag
quality`` argument lists. No Airflow import (the DAG file and the tests call :func:`resolve_retag`); the
jobs' own code reads the job conf.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Callable, Mapping

try:  # the folder is on sys.path when Airflow parses it
    import _common as common
except ImportError:  # imported as a package (airflow_dags._retag)
    from airflow_dags import _common as common


def month_windows(start: str, end: str) -> list[tuple[str, str]]:
    """``[start, end]`` cut at month boundaries: one (first day, last day) pair per calendar month."""
    d0, d1 = date.fromisoformat(str(start)), date.fromisoformat(str(end))
    if d1 < d0:
        raise ValueError(f"end {d1} is before start {d0}")
    out = []
    cur = d0
    while cur <= d1:
        nxt = date(cur.year + (cur.month == 12), cur.month % 12 + 1, 1)
        out.append((cur.isoformat(), min(d1, nxt - timedelta(days=1)).isoformat()))
        cur = nxt
    return out


def resolve_retag(params: Mapping[str, Any], variable: Callable[[str], Any]) -> dict[str, Any]:
    """The settings of a ``vtag_retag`` run (Params > Variables > job conf) and its argument lists.

    ``plan_args``: ``vtag retag plan``; ``month_args``: one ``vtag retag run`` per calendar month of the
    range (spark-submit); ``verify_args``: ``vtag quality`` over the range at the target taxonomy.
    """
    missing = [k for k in ("from_taxonomy", "to_taxonomy", "bundle", "start", "end") if not params.get(k)]
    if missing:
        raise ValueError(f"vtag_retag needs the Params {missing}")
    start, end = (date.fromisoformat(str(params[k])).isoformat() for k in ("start", "end"))
    windows = month_windows(start, end)
    job_conf_path = common.abspath(common._pick(params, variable, "job_conf", common.DEFAULT_JOB_CONF))
    overrides = common._overrides(params.get("conf"), "Param conf")
    jc = common.read_job_conf(job_conf_path, overrides)
    warehouse = common.abspath(common._pick(params, variable, "warehouse", jc.get("warehouse")))
    dump_root = common.abspath(common._pick(params, variable, "dump_root", jc.get("dump_root")))
    src, dst, bundle = (common.abspath(params[k]) for k in ("from_taxonomy", "to_taxonomy", "bundle"))
    cli_conf = common._overrides(variable("vtag_cli_conf") or common.DEFAULTS["cli_conf"], "Variable vtag_cli_conf")
    taxa = ["--from", src, "--to", dst]
    where = (["--warehouse", warehouse] if warehouse else []) + ["--job-conf", job_conf_path]
    on_worker = [a for kv in overrides + cli_conf for a in ("--conf", kv)]
    on_spark = [a for kv in overrides for a in ("--conf", kv)]
    dry = ["--dry-run"] if params.get("dry_run") else []
    month_args = [
        ["retag", "run", *taxa, "--start", a, "--end", b, "--bundle", bundle,
         *(["--dump-root", dump_root] if dump_root else []), *where, *on_spark, *dry]
        for a, b in windows
    ]
    verify_args = ["quality", "--start", start, "--end", end, *where, "--expect-taxonomy", dst, "--skip-drift",
                   "--max-quarantine-rate", "1", "--min-rows", "0", *on_worker, "--json"]
    return {
        "start": start,
        "end": end,
        "months": [a[:7] for a, _ in windows],
        "dry_run": bool(params.get("dry_run")),
        "plan_args": ["retag", "plan", *taxa, "--start", start, "--end", end, *where, *on_worker, "--json"],
        "month_args": month_args,
        "verify_args": verify_args,
        **common.spark_submit_options(jc),
    }
