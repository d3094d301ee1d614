"""Weekly retraining replayed on a labeled dump: what ``vtag_retrain`` (train, then ``vtag promote``)
is worth against a bundle that is never retrained, through the product path only.

The dump's days are cut into periods of ``--period-days`` (weeks by default) from its first day.
``B-<day>`` is ``vtag train``-ed on the labeled days up to that day (the last ``--train-days`` of
them; 0: all). The production bundle starts as the bundle of the first ``i`` periods (``i`` =
``--initial-periods``). Each later period ``p`` is tagged, and scored as ``vtag evaluate`` scores
it, by three bundles:

- ``static``: the first bundle for ever (no retraining);
- ``retrained, checked``: what ``vtag_retrain`` runs. At the end of each period the candidate,
  trained up to ``--holdout-days`` before its last day, goes through ``vtag promote`` against the
  bundle the link points at, on those held-out days; the link then tags the next period. The
  bundle in production is ``--holdout-days`` older than the labels;
- ``retrained, unchecked``: the bundle trained on every labeled day before ``p``, switched to with
  no check (the freshest bundle there can be, with no guard against a bad one).

Periods ``i + 1`` .. last are scored.
Figures: each bundle's leaf accuracy and hF1 per period, and pooled over the scored periods (rows
weighted). With ``--jsonl`` (Bilibili's format, default the shared file) the dump is written first
(``bench/public_titles.py``: one ``dt`` per upload day in Asia/Shanghai).

Usage::

    python bench/retrain_replay.py [--jsonl F | --data ROOT --taxonomy T] [--config conf/model/text-context.yaml]
        [--period-days 7] [--initial-periods 5] [--holdout-days 2] [--threads 2] [--md-out F] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def arg_parser() -> argparse.ArgumentParser:
    import public_titles

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jsonl", type=Path, default=public_titles.SHARED_DATA / "zh_titles" / "bilibili_popular_2023"
                    / "videos.jsonl", help="a Bilibili JSONL (default: the shared 2023 file); ignored with --data")
    ap.add_argument("--data", help="a labeled dump root (dt=*/) instead of --jsonl")
    ap.add_argument("--taxonomy", help="with --data: its taxonomy file")
    ap.add_argument("--config", default=str(REPO / "conf" / "model" / "text-context.yaml"), help="model config")
    ap.add_argument("--period-days", type=int, default=7, help="days per retraining period (default 7)")
    ap.add_argument("--initial-periods", type=int, default=5, help="periods the first bundle trains on (default 5)")
    ap.add_argument("--train-days", type=int, default=0, help="days a bundle trains on, the latest (0: all earlier)")
    ap.add_argument("--holdout-days", type=int, default=2, help="the check's held-out days, the last of each "
                    "period (default 2, as vtag_retrain's; the period's length: a whole period held out)")
    ap.add_argument("--min-gain", type=float, default=0.0, help="vtag promote --min-gain")
    ap.add_argument("--label-fraction", type=float, default=1.0,
                    help="train and check on this seeded share of each day's rows (editors label a sample); "
                         "every row is still scored (default 1: every row labeled)")
    ap.add_argument("--epochs", type=int, help="vtag train --epochs (default: the config's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of training and scoring")
    ap.add_argument("--work", type=Path, help="folder for the dump, bundles and link (default: a temporary one)")
    ap.add_argument("--reuse", action="store_true",
                    help="use the bundles already in --work/bundles (a rerun with the same data and settings)")
    ap.add_argument("--md-out", type=Path)
    ap.add_argument("--json-out", type=Path)
    return ap


def periods_of(days: list[str], period_days: int) -> list[list[str]]:
    """Sorted ``YYYY-MM-DD`` days cut into calendar periods of ``period_days`` from the first day (a
    period without data is left out)."""
    if period_days < 1:
        raise ValueError("period_days must be >= 1")
    days = sorted(days)
    d0 = date.fromisoformat(days[0])
    out: dict[int, list[str]] = {}
    for d in days:
        out.setdefault((date.fromisoformat(d) - d0).days // period_days, []).append(d)
    return [out[k] for k in sorted(out)]


#: column -> header
STRATEGIES = {"static": "static", "checked": "retrained, checked (vtag_retrain)",
              "unchecked": "retrained, unchecked"}


def _dump_days(data: str) -> list[str]:
    from vtag.models.data import dump_days

    return dump_days([Path(root) for root in data.split(",")])


def _pooled(scores: list[dict], key: str) -> float:
    n = sum(s["n"] for s in scores)
    return sum(s[key] * s["n"] for s in scores) / n if n else float("nan")


def sample_dump(data: str, out: Path, fraction: float, seed: int) -> str:
    """Each day of the labeled dump ``data`` cut to a seeded ``fraction`` of its rows, written under ``out``
    (the labels a team that labels a sample would have); returns the new root."""
    from vtag.models.data import read_dumps, write_dump

    if not 0 < fraction <= 1:
        raise SystemExit("retrain_replay: --label-fraction must be in (0, 1]")
    for day in _dump_days(data):
        rows = read_dumps(data, dates=day)
        write_dump(rows.sample(frac=fraction, random_state=seed).drop(columns=["dt"], errors="ignore"), out, day)
    return str(out)


def replay(data: str, taxonomy: str, work: Path, args, train_data: str | None = None) -> dict:
    """Train, promote and score as the module docstring says; returns the report.

    Parameters
    ----------
    data
        The labeled dump every period is scored on.
    taxonomy
        Its taxonomy file.
    work
        Folder of the bundles and the link.
    args
        The parsed options.
    train_data
        The labeled dump the bundles train and are checked on (default ``data``; a sample of it with
        ``--label-fraction``).
    """
    train_data = train_data or data
    from vtag.jobs.cli import main as vtag
    from vtag.jobs.cli.promote import history_path, read_history
    from vtag.models.evaluate import evaluate_bundle, load_labeled

    periods = periods_of(_dump_days(data), args.period_days)
    i = args.initial_periods
    if i < 1 or len(periods) < i + 2:
        raise SystemExit(f"retrain_replay: {len(periods)} periods of {args.period_days} days; --initial-periods {i} "
                         f"needs at least {i + 2}")
    held = args.holdout_days
    if not 1 <= held <= args.period_days:
        raise SystemExit(f"retrain_replay: --holdout-days must be 1 .. --period-days ({args.period_days})")
    bundles: dict[str, Path] = {}
    train_seconds: dict[str, float] = {}

    def end(q: int) -> date:
        return date.fromisoformat(periods[q][-1])

    def bundle(cut: date) -> Path:
        """The bundle trained on the labeled days up to ``cut``."""
        key = cut.isoformat()
        if key not in bundles:
            first = "" if not args.train_days else (cut - timedelta(days=args.train_days - 1)).isoformat()
            out = work / "bundles" / f"B-{key}"
            if not (args.reuse and (out / "model.safetensors").is_file()):
                argv = ["train", "--config", args.config, "--data", train_data, "--taxonomy", taxonomy, "--dates",
                        f"{first}..{key}", "--out", str(out), "--seed", str(args.seed), "--threads",
                        str(args.threads), "--no-progress", "--label", f"replay-{key}",
                        "--drop-checkpoint"]  # as vtag_retrain trains: 0.28 GB a bundle, not 0.93
                if args.epochs:
                    argv += ["--epochs", str(args.epochs)]
                t0 = time.perf_counter()
                if vtag(argv) != 0:
                    raise SystemExit(f"retrain_replay: vtag {' '.join(argv)} failed")
                train_seconds[key] = round(time.perf_counter() - t0, 1)
            bundles[key] = out
        return bundles[key]

    frames: dict[int, object] = {}
    scores: dict[tuple[date, int], dict] = {}

    def score(cut: date, p: int) -> dict:
        if (cut, p) not in scores:
            if p not in frames:
                frames[p] = load_labeled(data, f"{periods[p][0]}..{periods[p][-1]}", what="retrain_replay")
            ov = evaluate_bundle(str(bundle(cut)), frames[p])["overall"]
            scores[(cut, p)] = {"bundle": f"B-{cut.isoformat()}", "n": int(ov["n"]), "leaf_acc": ov["leaf_acc"],
                                "hf1": ov["hf1"]}
        return scores[(cut, p)]

    link = work / "prod"
    link.unlink(missing_ok=True)  # the replay's own link and log: a rerun in the same --work starts afresh
    history_path(link).unlink(missing_ok=True)

    def promote(cut: date, q: int) -> bool:
        """``vtag promote`` of the bundle trained up to ``cut``, on the days after it through the end of ``q``."""
        return vtag(["promote", "--link", str(link), "--candidate", str(bundle(cut)), "--data", train_data, "--dates",
                     f"{(cut + timedelta(days=1)).isoformat()}..{end(q).isoformat()}", "--min-gain",
                     str(args.min_gain), "--threads", str(args.threads), "--json"]) == 0

    static = end(i - 1)
    if not promote(static, i):  # the first promotion: no link yet
        raise SystemExit("retrain_replay: the first promotion failed")
    champion = static
    rows = []
    for p in range(i + 1, len(periods)):
        cut = end(p - 1) - timedelta(days=held)  # the DAG's run at the end of period p - 1
        if cut != champion and promote(cut, p - 1):
            champion = cut
        rows.append({"period": p, "days": f"{periods[p][0]}..{periods[p][-1]}", "static": score(static, p),
                     "checked": score(champion, p), "unchecked": score(end(p - 1), p)})
    pooled = {s: {m: _pooled([r[s] for r in rows], m) for m in ("leaf_acc", "hf1")} for s in STRATEGIES}
    decisions = [{k: e.get(k) for k in ("decision", "candidate", "from", "dates", "gains", "failed")}
                 for e in read_history(link)]
    return {"data": data, "config": args.config, "period_days": args.period_days, "initial_periods": i,
            "train_days": args.train_days, "holdout_days": held, "min_gain": args.min_gain, "periods": len(periods),
            "label_fraction": args.label_fraction,
            "rows": rows, "pooled": pooled, "decisions": decisions, "train_seconds": train_seconds}


def render(report: dict) -> str:
    """The report as Markdown."""
    window = "every earlier day" if not report["train_days"] else f"the latest {report['train_days']} days"
    lines = [
        "# Weekly retraining replayed (bench/retrain_replay.py)",
        "",
        f"- Data: `{report['data']}`; config `{Path(report['config']).name}`; {report['periods']} periods of "
        f"{report['period_days']} days; the first bundle trains on {report['initial_periods']} periods; "
        f"bundles train on {window}; the check holds out the last {report['holdout_days']} days of a period; "
        f"`vtag promote --min-gain {report['min_gain']}`; bundles train and are checked on "
        f"{report.get('label_fraction', 1.0):.0%} of each day's rows, and every row is scored.",
        "",
        "| period | days | rows | " + " | ".join(STRATEGIES.values()) + " |",
        "|---|---|---|" + "---|" * len(STRATEGIES),
    ]
    for r in report["rows"]:
        cells = [f"{r[s]['bundle']} {r[s]['leaf_acc']:.4f} / {r[s]['hf1']:.4f}" for s in STRATEGIES]
        lines.append(f"| {r['period']} | {r['days']} | {r['static']['n']} | " + " | ".join(cells) + " |")
    p = report["pooled"]
    lines.append("| pooled | | {} | ".format(sum(r["static"]["n"] for r in report["rows"]))
                 + " | ".join(f"**{p[s]['leaf_acc']:.4f} / {p[s]['hf1']:.4f}**" for s in STRATEGIES) + " |")
    lines += ["", "Cells: the bundle, leaf accuracy / hF1 (as `vtag evaluate` scores them: replayed day by day where "
              "the bundle reads uploader profiles).", "", "Promotions (`<link>.promotions.jsonl`):", ""]
    for d in report["decisions"]:
        gains = ", ".join(f"{k} {v:+.4f}" for k, v in (d.get("gains") or {}).items())
        lines.append(f"- {Path(d['candidate']).name} on {d['dates']}: {d['decision']}" + (f" ({gains})" if gains else ""))
    secs = ", ".join(f"B-{k} {v:.0f} s" for k, v in sorted(report["train_seconds"].items()))
    lines += ["", f"Training time: {secs or 'bundles reused (--reuse)'}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = arg_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vtag-retrain-replay-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.data:
            if not args.taxonomy:
                raise SystemExit("retrain_replay: --data needs --taxonomy")
            data, taxonomy = args.data, args.taxonomy
        else:
            import public_titles

            dump, tax, _, _ = public_titles.write_bilibili(args.jsonl, work / "bilibili")
            data, taxonomy = str(dump), str(tax)
        train_data = None
        if args.label_fraction < 1:
            train_data = sample_dump(data, work / "labeled-sample", args.label_fraction, args.seed)
        report = replay(data, taxonomy, work, args, train_data)
    text = render(report)
    print(text)
    if args.md_out:
        args.md_out.write_text(text, encoding="utf-8")
    if args.json_out:
        args.json_out.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    print(json.dumps(report["pooled"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
