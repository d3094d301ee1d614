"""Generator knobs: ``conf/generate/default.yaml`` (documented there), overrides, and a stable hash."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from vtag import conf_dir

#: ``shared_data`` (a relative path) is relative to this folder: the checkout's root
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONF = conf_dir() / "generate" / "default.yaml"

#: bump when the generating code changes in a way that changes rows for the same seed and config
GENERATOR_VERSION = "1"


class GenerateConfigError(ValueError):
    """A generator config file or override is malformed."""


def _merge(base: dict, extra: Mapping) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _set_dotted(conf: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    cur = conf
    for p in parts[:-1]:
        if not isinstance(cur.get(p), dict):
            raise GenerateConfigError(f"override {key!r}: {p!r} is not a section")
        cur = cur[p]
    if parts[-1] not in cur:
        raise GenerateConfigError(f"override {key!r}: unknown knob (see conf/generate/default.yaml)")
    old = cur[parts[-1]]
    if isinstance(value, str) and not isinstance(old, str):
        value = yaml.safe_load(value)
    cur[parts[-1]] = value


def load_config(
    path: str | Path | Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | Iterable[str] | None = None
) -> dict:
    """The default knobs, merged with ``path`` (a partial YAML file, or a mapping) and ``a.b=v`` overrides."""
    try:
        conf = yaml.safe_load(DEFAULT_CONF.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise GenerateConfigError(f"cannot read {DEFAULT_CONF}: {exc}") from exc
    if isinstance(path, Mapping):
        conf = _merge(conf, path)
    elif path and Path(path).resolve() != DEFAULT_CONF.resolve():
        try:
            extra = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise GenerateConfigError(f"cannot read generator config {path}: {exc}") from exc
        if not isinstance(extra, dict):
            raise GenerateConfigError(f"{path}: a generator config must be a mapping")
        conf = _merge(conf, extra)
    if overrides:
        items = overrides.items() if isinstance(overrides, Mapping) else (
            tuple(s.split("=", 1)) if "=" in s else (s, None) for s in overrides
        )
        for key, value in items:
            if value is None:
                raise GenerateConfigError(f"--set expects key=value, got {key!r}")
            _set_dotted(conf, str(key).strip(), value)
    return conf


def config_hash(conf: Mapping[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of the canonical JSON of the knobs (+ generator version)."""
    blob = json.dumps({"v": GENERATOR_VERSION, "conf": conf}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def resolve_shared_data(conf: Mapping[str, Any]) -> Path:
    """Where real-data seeds are read from: ``$VTAG_SHARED_DATA``, else ``shared_data`` (relative to
    the repo root), default ``../shared/data``."""
    env = os.environ.get("VTAG_SHARED_DATA")
    raw = env or str(conf.get("shared_data") or "../shared/data")
    p = Path(raw)
    return p if p.is_absolute() else (REPO_ROOT / p).resolve()
