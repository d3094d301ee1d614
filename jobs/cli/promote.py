"""``vtag promote``: switch the production bundle to a retrained one only where it is not worse.

The production bundle path (the job conf's ``bundle``, Airflow's ``vtag_bundle``) is a symbolic link
to a versioned bundle directory. ``vtag promote --candidate NEW --link PROD --data LABELED --dates
HOLDOUT`` scores the bundle the link points at and the candidate on the same held-out labeled days
(:func:`vtag.models.evaluate.evaluate_bundle`: the ``vtag evaluate`` report, replayed as the nightly
job meets the rows where a bundle reads uploader profiles) and re-points the link at the candidate
when every ``--metrics`` gains at least ``--min-gain``. The switch is one ``rename(2)`` of a new
link over the old, so a reader sees the old bundle or the new one, never neither; ``vtag tag``
resolves the link once at its start, so a run in flight keeps the bundle it began with.

Every decision (promoted, rejected, rolled back) is appended to ``<link>.promotions.jsonl``, and
``vtag promote --rollback --link PROD`` points the link back at the bundle the last promotion
replaced. ``--keep N`` (with either, or alone) then deletes the bundle folders the log names that the
link can no longer need: it keeps the current bundle and the N − 1 it replaced in turn (the rollback
chain), the bundle the last switch replaced (a ``vtag tag`` run in flight may still read it) and the
latest candidate (a rejected one stays for a look until the next).

Refused: a link path that is a real directory, a candidate trained or validated on the held-out rows
(its metrics would flatter it), and a candidate of another taxonomy version (a new taxonomy goes
through ``vtag retag``). Exit status: 0 promoted (or would be, with ``--dry-run``), 3
rejected by the metrics, 1 refused.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

#: the exit status of a candidate the metrics reject (1 is a refused invocation)
REJECTED = 3
DEFAULT_METRICS = ("leaf_acc", "hf1")
#: fewer rows found in the candidate's training ids than this never refuse it (Bloom-filter false
#: positives: at most 1 in 1,000 ids per part, so 5 or more in a small holdout is an overlap)
MIN_OVERLAP_ROWS = 5


def _arg_parser() -> argparse.ArgumentParser:
    from vtag.models.replay import COUNT_MODES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--link", required=True, help="the production bundle path: a symbolic link to a bundle directory")
    p.add_argument("--candidate", help="the retrained bundle directory (trained on days before --dates)")
    p.add_argument("--data", help="labeled dump root(s), comma-separated, holding the held-out days")
    p.add_argument("--dates", help="the held-out days (later than every day the candidate trained on), "
                   "e.g. 2024-03-04..2024-03-10")
    p.add_argument("--taxonomy", help="refuse unless both bundles were trained on this taxonomy file's version")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                   help="vtag evaluate metrics that must not fall, comma-separated (default: %(default)s)")
    p.add_argument("--min-gain", type=float, default=0.0,
                   help="each metric of the candidate minus the current bundle's must be at least this "
                        "(default 0: not worse; -0.005 tolerates half a point)")
    p.add_argument("--replay", action=argparse.BooleanOptionalAction, default=None,
                   help="as vtag evaluate: score day by day with the model's own tags in the profiles")
    p.add_argument("--min-score", type=float, default=0.0, help="as vtag evaluate (the job conf's profiles.min_score)")
    p.add_argument("--count", choices=COUNT_MODES, default=COUNT_MODES[0], help="as vtag evaluate")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--dry-run", action="store_true", help="score and decide, but leave the link and the log alone")
    p.add_argument("--rollback", action="store_true",
                   help="point the link back at the bundle the last promotion replaced (nothing is scored)")
    p.add_argument("--keep", type=int, metavar="N",
                   help="then delete the logged bundle folders beyond the current one and the N-1 it replaced "
                        "(the rollback chain; the last replaced one and the latest candidate stay too); "
                        "alone: only that")
    p.add_argument("--json", action="store_true", help="print the decision as one JSON line")
    return p


def _now() -> str:
    """The time of a decision, as logged: UTC, ISO 8601, seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------ the link
def history_path(link: Path) -> Path:
    """The promotion log beside the link: ``<link>.promotions.jsonl``."""
    return link.with_name(link.name + ".promotions.jsonl")


def current_target(link: Path) -> Path | None:
    """The bundle directory ``link`` points at (resolved), or None where no link exists yet.

    Parameters
    ----------
    link
        The production bundle path.
    """
    if link.is_symlink():
        return link.resolve()
    if link.exists():
        raise SystemExit(f"vtag promote: {link} is a directory, not a symbolic link: make the production path a link "
                         f"once (mv {link} {link}-v1 && ln -s {link.name}-v1 {link}), then promote")
    return None


def point(link: Path, target: Path) -> None:
    """Make ``link`` a symbolic link to ``target`` in one ``rename(2)`` (no moment without a link).

    Parameters
    ----------
    link
        The production bundle path (a link, or absent).
    target
        The bundle directory (made absolute).
    """
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(str(Path(target).resolve()), tmp)
    try:
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def promotion_to(history: list[dict], bundle: Path) -> dict | None:
    """The latest promotion that brought ``bundle`` in (its ``from`` is where a rollback goes), or None.

    Parameters
    ----------
    history
        The link's :func:`read_history`.
    bundle
        A bundle directory, resolved.
    """
    return next((e for e in reversed(history)
                 if e["decision"] == "promoted" and e.get("to") and Path(e["to"]) == bundle), None)


def append_history(link: Path, entry: Mapping[str, Any]) -> None:
    """Append one decision to :func:`history_path` (one JSON object per line)."""
    with history_path(link).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")


def read_history(link: Path) -> list[dict]:
    """Every decision logged for ``link``, oldest first."""
    path = history_path(link)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ------------------------------------------------------------------------------------ the decision
def decide(candidate: Mapping[str, float], current: Mapping[str, float] | None, metrics: list[str],
           min_gain: float) -> dict[str, Any]:
    """Whether the candidate's metrics pass: each gains at least ``min_gain`` over the current bundle's.

    Parameters
    ----------
    candidate, current
        ``overall`` sections of two ``vtag evaluate`` reports (``current`` None: no bundle yet, so the
        candidate passes).
    metrics
        Metric names that must not fall.
    min_gain
        The least gain each metric must show (negative: a tolerated loss).

    Returns
    -------
    dict
        ``promote`` (bool), ``gains`` (metric -> candidate − current), ``failed`` (the metrics short of
        ``min_gain``, each as a sentence).
    """
    missing = [m for m in metrics if m not in candidate or (current is not None and m not in current)]
    if missing:
        raise SystemExit(f"vtag promote: no metric {missing} in the evaluation (have {sorted(candidate)})")
    if current is None:
        return {"promote": True, "gains": {}, "failed": []}
    gains = {m: float(candidate[m]) - float(current[m]) for m in metrics}
    failed = [f"{m}: {float(candidate[m]):.4f} against {float(current[m]):.4f} ({gains[m]:+.4f} < {min_gain:+.4f})"
              for m in metrics if gains[m] < min_gain]
    return {"promote": not failed, "gains": gains, "failed": failed}


def _check_candidate(candidate: Path, frame, current: Path | None, expected: str | None) -> None:
    """Refuse a candidate that saw the held-out rows or has another taxonomy version than the current."""
    from vtag.models.bundle import read_meta
    from vtag.models.provenance import OVERLAP_WARN_SHARE, overlap

    meta = read_meta(candidate)
    if expected and meta.taxonomy_version != expected:
        raise SystemExit(f"vtag promote: the candidate was trained on taxonomy {meta.taxonomy_version}, "
                         f"not {expected}")
    if current is not None:
        was = read_meta(current).taxonomy_version
        if was != meta.taxonomy_version:
            raise SystemExit(f"vtag promote: the candidate's taxonomy {meta.taxonomy_version} is not the current "
                             f"bundle's {was}: a new taxonomy goes through `vtag retag` (docs/operations.md)")
    seen = overlap(candidate, frame["video_id"] if "video_id" in frame else [])
    # the ids are kept in a Bloom filter: a few false positives on a small holdout are not an overlap
    if not seen["known"] or seen.get("seen", 0) > max(OVERLAP_WARN_SHARE * len(frame), MIN_OVERLAP_ROWS):
        raise SystemExit(f"vtag promote: the candidate cannot be compared on these days: {seen['warning']} "
                         "(train it on days before the held-out ones: vtag train --dates)")


def promote(args: argparse.Namespace) -> dict[str, Any]:
    """Score, decide and (unless ``--dry-run``) switch and log; returns the decision record."""
    import torch

    from vtag.models.evaluate import evaluate_bundle, load_labeled

    if not (args.candidate and args.data and args.dates):
        raise SystemExit("vtag promote: --candidate, --data and --dates are needed (or --rollback, or --keep)")
    link, candidate = Path(args.link).absolute(), Path(args.candidate).resolve()
    current = current_target(link)
    if current == candidate:
        raise SystemExit(f"vtag promote: {link} already points at {candidate}")
    if args.threads:
        torch.set_num_threads(int(args.threads))
    expected = None
    if args.taxonomy:
        from vtag.hierarchy.taxonomy import Taxonomy

        expected = Taxonomy.load(args.taxonomy).version
    frame = load_labeled(args.data, args.dates, what="vtag promote")
    _check_candidate(candidate, frame, current, expected)
    opts = dict(device=args.device, expected_taxonomy_version=expected, replay=args.replay,
                min_score=args.min_score, count=args.count, what="vtag promote", data=args.data)
    reports = {"candidate": evaluate_bundle(str(candidate), frame, **opts)}
    if current is not None:
        reports["current"] = evaluate_bundle(str(current), frame, **opts)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    verdict = decide(reports["candidate"]["overall"], reports.get("current", {}).get("overall"), metrics,
                     args.min_gain)
    record = {
        "at": _now(),
        "link": str(link),
        "decision": ("promoted" if verdict["promote"] else "rejected") + (" (dry run)" if args.dry_run else ""),
        "from": str(current) if current else None,
        "to": str(candidate) if verdict["promote"] else (str(current) if current else None),
        "candidate": str(candidate),
        "data": args.data,
        "dates": args.dates,
        "rows": int(len(frame)),
        "metrics": {k: {m: r["overall"].get(m) for m in [*metrics, "n"]} for k, r in reports.items()},
        # the same metrics per uploader group (returning to the bundle's training data, new, ...)
        "uploaders": {k: {g: {m: v.get(m) for m in ["rows", *metrics] if m in v}
                          for g, v in ((r.get("uploaders") or {}).get("groups") or {}).items()}
                      for k, r in reports.items()},
        "model_versions": {k: r["model_version"] for k, r in reports.items()},
        # held-out rows each bundle trained or validated on: a current bundle that saw them scores high,
        # which only raises the bar for the candidate
        "seen_rows": {k: r["overlap"].get("seen") for k, r in reports.items()},
        "min_gain": args.min_gain,
        **verdict,
    }
    if not args.dry_run:
        if verdict["promote"]:
            point(link, candidate)
        append_history(link, record)
    return record


def _group_lines(uploaders: dict) -> list[str]:
    """``"new (412 rows): leaf_acc 0.3310 -> 0.3520"`` per uploader group: the current bundle's figure,
    then the candidate's (the candidate's alone where there is no current bundle)."""
    cand, cur = uploaders.get("candidate") or {}, uploaders.get("current") or {}
    lines = []
    for group, m in cand.items():
        figures = ", ".join(
            f"{k} {cur[group][k]:.4f} -> {v:.4f}" if isinstance(cur.get(group, {}).get(k), float) else f"{k} {v:.4f}"
            for k, v in m.items() if k != "rows" and isinstance(v, float))
        lines.append(f"{group} ({m.get('rows', 0)} rows): {figures}")
    return lines


def rollback(link: Path) -> dict[str, Any]:
    """Point ``link`` back at the bundle its last promotion replaced; returns the logged record.

    Parameters
    ----------
    link
        The production bundle path.
    """
    current = current_target(link)
    if current is None:
        raise SystemExit(f"vtag promote: nothing to roll back: there is no link at {link}")
    # the promotion that brought the current bundle in (so a second rollback goes one further back)
    last = promotion_to(read_history(link), current)
    if last is None:
        raise SystemExit(f"vtag promote: nothing to roll back: {history_path(link)} has no promotion to {current}")
    if not last["from"]:
        raise SystemExit(f"vtag promote: the promotion to {current} was the first: there is no earlier bundle")
    previous = Path(last["from"])
    from vtag.models.bundle import read_meta

    read_meta(previous)  # still a bundle (BundleError otherwise)
    point(link, previous)
    record = {"at": _now(), "link": str(link),
              "decision": "rolled back", "from": str(current), "to": str(previous), "promote": True}
    append_history(link, record)
    return record


# ------------------------------------------------------------------------------------ retention
def kept_bundles(link: Path, history: list[dict], keep: int) -> list[Path]:
    """The bundle folders :func:`prune` keeps for ``link``.

    Parameters
    ----------
    link
        The production bundle path.
    history
        Its :func:`read_history`.
    keep
        How many of the rollback chain to keep: the current bundle, the one its promotion replaced, and
        so on back (``keep`` − 1 rollbacks stay possible).

    Returns
    -------
    list of Path
        The chain, then the bundle the last switch (promotion or rollback) replaced and the latest
        logged candidate, resolved, without repeats.
    """
    if keep < 1:
        raise SystemExit(f"vtag promote: --keep must be at least 1 (the current bundle), got {keep}")
    kept: list[Path] = []
    target = current_target(link)
    while target is not None and len(kept) < keep and target not in kept:
        kept.append(target)
        brought = promotion_to(history, target)  # the chain --rollback walks
        target = Path(brought["from"]) if brought and brought.get("from") else None
    switches = [e for e in history if e["decision"] in ("promoted", "rolled back")]
    if switches and switches[-1].get("from"):
        kept.append(Path(switches[-1]["from"]))
    candidates = [e["candidate"] for e in history if e.get("candidate")]
    if candidates:
        kept.append(Path(candidates[-1]))
    return list(dict.fromkeys(p.resolve() for p in kept))


def prune(link: Path, keep: int, *, dry_run: bool = False) -> dict[str, Any]:
    """Delete the bundle folders ``link``'s log names beyond :func:`kept_bundles` (logged as "pruned").

    Only folders the log names are touched, and only those that still read as bundles, so a folder
    made by hand beside them, or a path reused for something else, is never deleted.

    Parameters
    ----------
    link
        The production bundle path.
    keep
        As :func:`kept_bundles`.
    dry_run
        List what would go, delete and log nothing.

    Returns
    -------
    dict
        ``decision`` ("pruned", or "pruned (dry run)"), ``kept`` and ``removed`` (paths), ``promote`` True.
    """
    import shutil

    from vtag.models.bundle import BundleError, read_meta

    history = read_history(link)
    kept = kept_bundles(link, history, keep)
    named = dict.fromkeys(Path(e[k]) for e in history for k in ("from", "to", "candidate") if e.get(k))
    removed = []
    for folder in named:
        if folder.is_symlink() or not folder.is_dir() or folder.resolve() in kept:
            continue
        try:
            read_meta(folder)
        except (BundleError, KeyError, TypeError):  # not (or no longer) a bundle: not ours to delete
            continue
        if not dry_run:
            shutil.rmtree(folder)
        removed.append(str(folder))
    record = {"at": _now(), "link": str(link), "decision": "pruned" + (" (dry run)" if dry_run else ""),
              "keep": keep, "kept": [str(p) for p in kept], "removed": removed, "promote": True}
    if removed and not dry_run:
        append_history(link, record)
    return record


def main(args: argparse.Namespace) -> int:
    """Run ``vtag promote``; returns 0 (promoted or rolled back), :data:`REJECTED`, or 1 (refused).

    Parameters
    ----------
    args
        The parsed options of :func:`_arg_parser`.
    """
    from vtag.models.bundle import BundleError

    link = Path(args.link).absolute()
    try:
        if args.rollback:
            record = rollback(link)
        elif args.candidate or args.keep is None:
            record = promote(args)
        else:
            current = current_target(link)
            if current is None:
                raise SystemExit(f"vtag promote: nothing to keep or delete: there is no link at {link}")
            record = {"link": str(link), "decision": "kept", "to": str(current), "promote": True}
        if args.keep is not None:
            pruned = prune(link, args.keep, dry_run=args.dry_run)
            record = {**record, "kept": pruned["kept"], "removed": pruned["removed"]}
    except BundleError as exc:
        raise SystemExit(f"vtag promote: {exc}") from exc
    if args.json:
        print(json.dumps(record, ensure_ascii=False, sort_keys=True))
    else:
        print(f"{record['decision']}: {args.link} -> {record['to']}")
        for metric, gain in record.get("gains", {}).items():
            print(f"  {metric}: {gain:+.4f}")
        for line in record.get("failed", []):
            print(f"  short: {line}")
        for line in _group_lines(record.get("uploaders") or {}):
            print(f"  {line}")
        for folder in record.get("removed", []):
            print(f"  {'would delete' if args.dry_run else 'deleted'}: {folder}")
        if args.keep is not None:
            print(f"  kept: {', '.join(record['kept']) or '-'}" + ("" if record["removed"] else " (nothing to delete)"))
    return 0 if record["promote"] else REJECTED
