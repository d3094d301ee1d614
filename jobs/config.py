"""Job configuration: a YAML profile from ``conf/jobs/`` with ``k=v`` overrides layered on top.

The profiles ship as package data: :func:`vtag.conf_dir` (``$VTAG_CONF_DIR`` replaces it here)."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from vtag import conf_dir

CONF_DIR = Path(os.environ.get("VTAG_CONF_DIR", conf_dir()))
DEFAULT_JOB_CONF = CONF_DIR / "jobs" / "local.yaml"


class ConfigError(ValueError):
    """A job configuration or a ``--conf`` override is malformed."""


def parse_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """``["a=1", "spark.x=y"]`` -> ``{"a": "1", "spark.x": "y"}``; a pair without ``=`` is an error."""
    out: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--conf expects key=value, got {pair!r}")
        out[key.strip()] = value
    return out


def load_job_conf(path: str | Path | None = None, overrides: Iterable[str] | dict | None = None) -> dict[str, Any]:
    """Load a job profile (default ``conf/jobs/local.yaml``) and apply overrides.

    Keys starting with ``spark.`` go into the ``spark`` mapping; another dotted key ``section.key``
    sets ``key`` in the mapping ``section`` (created when absent, e.g. ``profiles.min_score=0.7``);
    other keys replace vtag settings (``master``, ``warehouse``, ``dump_root``, ``bundle``, ...).
    Values stay strings for Spark.
    """
    path = Path(path) if path else DEFAULT_JOB_CONF
    try:
        conf = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read job conf {path}: {exc}") from exc
    if not isinstance(conf, dict):
        raise ConfigError(f"{path}: a job conf must be a mapping")
    conf = copy.deepcopy(conf)
    conf.setdefault("spark", {})
    conf["spark"] = {str(k): str(v) for k, v in (conf["spark"] or {}).items()}
    conf["_path"] = str(path)
    items = overrides.items() if isinstance(overrides, dict) else parse_overrides(overrides or ()).items()
    for key, value in items:
        if key.startswith("spark."):
            conf["spark"][key] = str(value)
        elif "." in key:
            _set_in_section(conf, key, value)
        else:
            conf[key] = value
    return conf


def conf_from_args(args: Any) -> dict[str, Any]:
    """The job conf of a command's ``--job-conf``, ``--conf K=V`` and ``--warehouse`` arguments."""
    overrides = list(args.conf)
    if args.warehouse:
        overrides.append(f"warehouse={args.warehouse}")
    return load_job_conf(args.job_conf, overrides)


def _set_in_section(conf: dict[str, Any], key: str, value: Any) -> None:
    """Set ``section.name`` = ``value`` in the mapping ``conf[section]`` (created when absent).

    Parameters
    ----------
    conf : dict
        The job conf being built.
    key : str
        ``section.name``; ``section`` must be a mapping in the conf (or absent), not a plain value.
    value : Any
        The override's value (a string from the command line).
    """
    section, _, name = key.partition(".")
    current = conf.get(section)
    if current is None:
        current = conf[section] = {}
    if not isinstance(current, dict) or not name:
        raise ConfigError(f"--conf {key}: {section!r} is not a section of the job conf")
    current[name] = value


def day_range(start: str, end: str | None = None, max_days: int | None = None) -> list[str]:
    """The days ``start .. end`` (inclusive) as YYYY-MM-DD strings: the one day-range helper of jobs/.

    Parameters
    ----------
    start
        The first day, YYYY-MM-DD.
    end
        The last day (default: ``start``, one day).
    max_days
        Refuse a longer range (default: no limit).

    Raises
    ------
    ValueError
        A date is not YYYY-MM-DD, ``end`` is before ``start``, or the range is over ``max_days``.
    """
    from datetime import date, timedelta

    first, last = date.fromisoformat(str(start)), date.fromisoformat(str(end or start))
    if last < first:
        raise ValueError(f"--end {end} is before --start {start}")
    n = (last - first).days + 1
    if max_days is not None and n > max_days:
        raise ValueError(f"{n} days is more than {max_days}: split the range")
    return [(first + timedelta(days=i)).isoformat() for i in range(n)]
