"""Job configuration: one typed object, :class:`JobConf`, from a YAML profile of ``conf/jobs/`` with
``k=v`` overrides layered on top.

The profiles ship as package data: :func:`vtag.conf_dir` (``$VTAG_CONF_DIR`` replaces it here). Every
key is declared once, below, with its type, default and doc; an unknown key (in a file or a ``--conf``)
is a :class:`ConfigError` that names it and the closest known key; ``spark.*`` keys pass through to
Spark. The options every Spark command shares (``--job-conf``, ``--conf``, ``--warehouse``) are declared
once, by :func:`add_job_conf_args`. The Airflow DAGs read job confs through this module too.
"""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from vtag import conf_dir

CONF_DIR = Path(os.environ.get("VTAG_CONF_DIR", conf_dir()))
DEFAULT_JOB_CONF = CONF_DIR / "jobs" / "local.yaml"

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A job configuration or a ``--conf`` override is malformed."""


def _key(default: Any, doc: str, *, section: Mapping[str, str] | None = None) -> Any:
    """A declared key: its default and one-line doc (``section``: the keys of a mapping and their docs)."""
    meta = {"doc": doc, "section": dict(section) if section is not None else None}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class JobConf:
    """The settings of a Spark job (``vtag tag``, ``retag``, ``quality``, ``profiles``, ``maintain``, ...).

    Read with attributes (``conf.warehouse``) or, as the jobs always did, ``conf["warehouse"]`` /
    ``conf.get("warehouse")``; reading an undeclared key raises :class:`ConfigError`.

    **Relative paths** (``warehouse``, ``dump_root``, ``bundle``, ``taxonomy``, ``cover_root``,
    ``delta_jars_dir``, ``profiles.labels_root``) resolve against the working directory of the process
    that runs the job, never against the conf file's folder or the package: run ``vtag`` from the
    folder the paths are relative to (the Airflow DAGs run it from ``VTAG_HOME`` and make the paths
    they pass absolute against it). URIs (``s3a://...``, ``file:...``) are used as they are.
    """

    master: str | None = _key("local[*]", "Spark master (local[*], yarn, k8s://...); ignored under spark-submit")
    app_name: str = _key("vtag", "Spark application name")
    log_level: str = _key("WARN", "Spark's log level (sparkContext.setLogLevel)")
    warehouse: str = _key("./warehouse", "Delta warehouse root: the tables live under <warehouse>/<table>")
    dump_root: str = _key("./dumps", "root of the daily dumps, <dump_root>/dt=YYYY-MM-DD/")
    bundle: str = _key("./bundles/demo", "model bundle directory used by vtag tag")
    taxonomy: str | None = _key(None, "the job's taxonomy file; the bundle must match its version (null: the bundle's)")
    corrupt_cover: str = _key("quarantine", "an undecodable cover: quarantine (reason undecodable_cover) | tag "
                              "(cover_missing = true)")
    cover_root: str | None = _key(None, "cover_uri resolves only under this root (null: the run's dump root)")
    cover_outside_root: str = _key("missing", "a cover_uri outside the root or relative: missing (tagged "
                                   "cover_missing) | quarantine")
    tag_partitions: int | None = _key(None, "partitions of the model input of a day (null: Spark's default "
                                      "parallelism)")
    publish: dict = _key({}, "write-audit-publish of a day (jobs/pipeline/publish.py)", section={
        "heartbeat_s": "a run rewrites <warehouse>/_vtag_runs/<run_id>/heartbeat this often (seconds)",
        "stale_after_s": "a run whose heartbeat is older is dead (seconds)",
        "lock_timeout_s": "how long a run waits for another live run publishing the same day (seconds)",
    })
    profiles: dict = _key({}, "uploader_profiles, the relational signal (jobs/pipeline/profiles.py)", section={
        "enabled": "join the profiles of the days before D into D's model input, refresh them after D",
        "min_score": "only video_tags rows with score >= this count towards a profile",
        "count": "score: a counted tag adds its score (an expected count) | one: it adds 1",
        "labels_root": "a labeled dump root (dt=*/ with labels) whose rows count too (source = labels)",
    })
    retag_remap_rows_per_s: float | None = _key(None, "vtag retag plan's cost model: rows remapped per second "
                                                "(null: the measured default)")
    retag_reinfer_rows_per_s: float | None = _key(None, "vtag retag plan's cost model: rows re-inferred per second")
    retag_reinfer_day_overhead_s: float | None = _key(None, "vtag retag plan's cost model: seconds per day with "
                                                      "rows to re-infer")
    catalog_database: str | None = _key(None, "metastore database of the tables (null: vtag)")
    catalog_register: bool = _key(False, "each run (re-)registers the tables in the metastore")
    storage_options: dict = _key({}, "object-store options (key, secret, endpoint, ...) of the delta-rs reads: vtag query, "
                                 "the publish's log reads (Spark uses its own Hadoop settings)")
    vacuum_listing_parallelism: int | None = _key(None, "vtag maintain: parallelism of VACUUM's file listing "
                                                  "(null: Delta's default)")
    delta_jars_dir: str | None = _key(None, "a directory of Delta jars (offline clusters; else the venv's or Maven)")
    delta_jars_version: str | None = _key(None, "Maven version of the Delta jars (null: the delta-spark package's)")
    delta_artifact: str = _key("delta-spark_4.1_2.13", "Maven artifact of Delta (Spark and Scala versions)")
    spark: dict = _key({}, "Spark settings, passed through as they are (spark.* keys; values are strings)")

    # ----------------------------------------------------------------- dict-like reads
    def __getitem__(self, key: str) -> Any:
        return getattr(self, _known(key))

    def get(self, key: str, default: Any = None) -> Any:
        """The value of a declared ``key``, or ``default`` when it is null; an undeclared key is an error."""
        value = getattr(self, _known(key))
        return default if value is None else value

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, _known(key), _coerce(key, value))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in KEYS

    def __iter__(self) -> Iterator[str]:
        return iter(KEYS)

    def __len__(self) -> int:
        return len(KEYS)

    def keys(self) -> list[str]:
        return list(KEYS)

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in KEYS]

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain mapping (``vtag config show --json``-like; sections copied)."""
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.items()}


KEYS: dict[str, Any] = {f.name: f for f in fields(JobConf)}
#: the declared keys of the mapping sections (``publish``, ``profiles``)
SECTIONS: dict[str, dict[str, str]] = {f.name: f.metadata["section"] for f in fields(JobConf)
                                       if f.metadata.get("section") is not None}
#: mapping keys whose entries are free (passed through): ``spark`` settings, ``storage_options``
FREE_MAPPINGS = ("spark", "storage_options")


def _suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _known(key: str) -> str:
    if key not in KEYS:
        raise ConfigError(f"unknown job conf key {key!r}{_suggest(key, KEYS)}")
    return key


def _default(name: str) -> Any:
    f = KEYS[name]
    return f.default_factory() if f.default is MISSING else f.default


def _coerce(key: str, value: Any) -> Any:
    """``value`` (a YAML value or a ``--conf`` string) as key ``key``'s declared type."""
    f = KEYS[key]
    kind = str(f.type)
    if isinstance(value, str) and value.strip().lower() in ("null", "none", "~") and "None" in kind:
        return None
    if value is None:
        return None if "None" in kind else _default(key)
    if kind.startswith("dict"):
        if not isinstance(value, dict):
            raise ConfigError(f"job conf key {key!r}: expected a mapping, got {value!r}")
        if key == "spark":
            return {str(k): str(v) for k, v in value.items()}
        if key in SECTIONS:
            for name in value:
                if name not in SECTIONS[key]:
                    raise ConfigError(f"unknown job conf key '{key}.{name}'"
                                      f"{_suggest(f'{key}.{name}', [f'{key}.{k}' for k in SECTIONS[key]])}")
        return dict(value)
    try:
        if kind.startswith("bool"):
            text = str(value).strip().lower()
            if text not in _TRUE + _FALSE:
                raise ValueError("expected true or false")
            return text in _TRUE
        if kind.startswith("int"):
            return int(value)
        if kind.startswith("float"):
            return float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"job conf key {key!r}: {value!r} is not a valid {kind.split(' ')[0]} ({exc})") from None
    return str(value)


def parse_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """``["a=1", "spark.x=y"]`` -> ``{"a": "1", "spark.x": "y"}``; a pair without ``=`` is an error."""
    out: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--conf expects key=value, got {pair!r}")
        out[key.strip()] = value
    return out


def job_conf(values: Mapping[str, Any] | None = None, where: str = "") -> JobConf:
    """A :class:`JobConf` from a mapping of top-level keys (unknown keys refused; ``spark.*`` keys go to
    ``spark``). ``where`` names the source in messages."""
    conf = JobConf()
    for key, value in (values or {}).items():
        key = str(key)
        if key.startswith("spark."):
            conf.spark[key] = str(value)
            continue
        if key not in KEYS:
            raise ConfigError(f"unknown job conf key {key!r}{where}{_suggest(key, KEYS)}")
        if key == "spark":
            conf.spark.update(_coerce(key, value))
        else:
            setattr(conf, key, _coerce(key, value))
    return conf


def load_job_conf(path: str | Path | None = None, overrides: Iterable[str] | dict | None = None) -> JobConf:
    """Load a job profile (default ``conf/jobs/local.yaml``) and apply overrides.

    Keys starting with ``spark.`` go into the ``spark`` mapping; another dotted key ``section.key``
    sets ``key`` in the mapping ``section`` (``profiles.min_score=0.7``); other keys replace vtag
    settings. Every key must be declared in :class:`JobConf`.
    """
    path = Path(path) if path else DEFAULT_JOB_CONF
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read job conf {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a job conf must be a mapping")
    conf = job_conf(raw, f" in {path}")
    items = overrides.items() if isinstance(overrides, dict) else parse_overrides(overrides or ()).items()
    for key, value in items:
        if key.startswith("spark."):
            conf.spark[key] = str(value)
        elif "." in key:
            _set_in_section(conf, key, value)
        elif key not in KEYS:
            raise ConfigError(f"--conf {key}: unknown job conf key {key!r}{_suggest(key, KEYS)}")
        else:
            conf[key] = value
    return conf


def add_job_conf_args(p: argparse.ArgumentParser, *, warehouse: bool = True) -> argparse.ArgumentParser:
    """Add the options every Spark command shares: ``--job-conf``, ``--conf K=V`` (repeatable) and, with
    ``warehouse``, ``--warehouse``. :func:`conf_from_args` reads them back."""
    if warehouse:
        p.add_argument("--warehouse", help="Delta warehouse root (default: job conf warehouse)")
    p.add_argument("--job-conf", help="job conf YAML (default conf/jobs/local.yaml)")
    p.add_argument("--conf", action="append", default=[], metavar="K=V",
                   help="override a job setting (a key of vtag.jobs.config.JobConf) or a spark.* setting")
    return p


def conf_from_args(args: Any) -> JobConf:
    """The job conf of a command's ``--job-conf``, ``--conf K=V`` and ``--warehouse`` arguments."""
    overrides = list(args.conf or [])
    if getattr(args, "warehouse", None):
        overrides.append(f"warehouse={args.warehouse}")
    return load_job_conf(args.job_conf, overrides)


def _set_in_section(conf: JobConf, key: str, value: Any) -> None:
    """Set ``section.name`` = ``value`` in the mapping ``conf[section]``.

    Parameters
    ----------
    conf : JobConf
        The job conf being built.
    key : str
        ``section.name``; ``section`` must be a mapping key of the conf, ``name`` one of its keys.
    value : Any
        The override's value (a string from the command line).
    """
    section, _, name = key.partition(".")
    if section not in SECTIONS and section not in FREE_MAPPINGS:
        if section in KEYS:
            raise ConfigError(f"--conf {key}: {section!r} is not a section of the job conf")
        raise ConfigError(f"--conf {key}: unknown job conf key {key!r}{_suggest(section, KEYS)}")
    if not name:
        raise ConfigError(f"--conf {key}: {section!r} is not a section of the job conf")
    current = dict(getattr(conf, section) or {})
    current[name] = value
    setattr(conf, section, _coerce(section, current))


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
