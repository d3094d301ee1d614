"""The scores and the report of bench/bilibili.py (and bench/realdata.py through it): one run's metrics,
per-system means and standard deviations over seeds, the console table and the Markdown file."""

from __future__ import annotations

import statistics

import numpy as np


def score(taxonomy, true_idx: np.ndarray, pred_idx: np.ndarray, returning: np.ndarray | None = None
          ) -> dict[str, float]:
    """``leaf_acc``, ``level1_acc``, ``hf1`` of predicted primary nodes ``[B]`` (taxonomy indices; the
    primary node may be internal: exact node match, as HiClass scores labels of any depth); with
    ``returning [B]`` bool (uploader seen in training) also ``leaf_acc_returning`` / ``leaf_acc_new``."""
    out = _score(taxonomy, true_idx, pred_idx)
    if returning is not None:
        for name, mask in (("returning", returning), ("new", ~returning)):
            if mask.any():
                out[f"leaf_acc_{name}"] = float(np.mean(true_idx[mask] == pred_idx[mask]))
    return out


def _score(taxonomy, true_idx: np.ndarray, pred_idx: np.ndarray) -> dict[str, float]:
    from vtag.hierarchy.metrics import hierarchical_prf, level_accuracy

    n = taxonomy.n_nodes
    t = np.zeros((len(true_idx), n), dtype=bool)
    p = np.zeros_like(t)
    t[np.arange(len(t)), true_idx] = True
    p[np.arange(len(p)), pred_idx] = True
    return {
        "leaf_acc": float(np.mean(true_idx == pred_idx)),
        "level1_acc": level_accuracy(taxonomy, true_idx, pred_idx)[1],
        "hf1": hierarchical_prf(taxonomy.close_ancestors(t), taxonomy.close_ancestors(p)).f1,
    }


def aggregate(runs: list[dict]) -> dict:
    """Mean and standard deviation (``<metric>_std``, 0 for one run) of each metric every run has,
    with the runs themselves under ``runs``.

    Parameters
    ----------
    runs : list of dict
        One system's runs (``leaf_acc``, ``level1_acc``, ``hf1`` and, where measured,
        ``leaf_acc_returning`` / ``leaf_acc_new``; ``seconds``, ``seed``).
    """
    agg = {}
    for k in ("leaf_acc", "level1_acc", "hf1", "leaf_acc_returning", "leaf_acc_new"):
        if not all(k in r for r in runs):
            continue
        vals = [r[k] for r in runs]
        agg[k] = float(np.mean(vals))
        agg[k + "_std"] = float(statistics.stdev(vals)) if len(vals) > 1 else 0.0
    return {**agg, "runs": runs}


def format_table(results: dict[str, dict]) -> str:
    """The Markdown table of ``{system: aggregate(...)}``, one row per system."""
    lines = ["| system | level-1 acc | leaf acc | hF1 | leaf acc, returning uploaders | leaf acc, new uploaders "
             "| runs | s/run |", "|---|---|---|---|---|---|---|---|"]

    def cell(r, k):
        return f"{r[k]:.4f} ± {r[k + '_std']:.4f}" if k in r else "–"

    for s, r in results.items():
        lines.append(f"| {s} | {cell(r, 'level1_acc')} | {cell(r, 'leaf_acc')} | {cell(r, 'hf1')} | "
                     f"{cell(r, 'leaf_acc_returning')} | {cell(r, 'leaf_acc_new')} | {len(r['runs'])} | "
                     f"{statistics.mean(x['seconds'] for x in r['runs']):.0f} |")
    return "\n".join(lines)


def format_markdown(results: dict[str, dict], *, command: str, device: str, split_desc: str, seeds: int,
                    n_train: int, n_test: int, wall_s: float | None = None, pending: list[str] | None = None,
                    failed: dict[str, str] | None = None, note: str | None = None,
                    title: str = "vtag vs peers on Bilibili video titles (bench/bilibili.py)") -> str:
    import datetime

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# {title}", "",
             f"- Command: `{command}`", f"- Device: {device}"] + ([f"- {note}"] if note else []) + [
             f"- Written: {now}" + (f"; {wall_s:.0f} s wall so far" if wall_s is not None else ""),
             f"- Split: {split_desc}: train {n_train} rows, test {n_test} rows",
             f"- Seeds: {seeds} per system (the deterministic peers — all but fasttext_ngrams — run once, std 0); mean ± std over runs. "
             "Metrics on the test side from each system's primary predicted node. A vtag row is the test days "
             "replayed as the nightly job meets them (each day sees the model's tags of the days before, each counted by its score; "
             "`vtag evaluate --replay`); `[static]`: the bundle's training-time profiles alone.", ""]
    if pending:
        lines += [f"- **Not finished** (runs missing): {', '.join(pending)}", ""]
    if failed:
        lines += ["- **Failed**: " + "; ".join(f"{k}: {v}" for k, v in failed.items()), ""]
    lines += [format_table(results), ""]
    vt = {k: v for k, v in results.items() if k.startswith("vtag")}
    peers = {k: v for k, v in results.items() if not k.startswith("vtag")}
    if vt and peers:
        for metric in ("leaf_acc", "hf1"):
            bv = max(vt, key=lambda k: vt[k][metric])
            bp = max(peers, key=lambda k: peers[k][metric])
            d = vt[bv][metric] - peers[bp][metric]
            d = 0.0 if abs(d) < 1e-9 else d  # a mean of equal run scores can differ in the last bit
            lines.append(f"- {metric}: best vtag `{bv}` {vt[bv][metric]:.4f} vs best peer `{bp}` "
                         f"{peers[bp][metric]:.4f} ({d:+.4f}: {'vtag ahead' if d > 0 else 'peer ahead or tied'})")
        lines.append("")
    lines += ["## Runs", "", "| system | seed | leaf acc | level-1 acc | hF1 | s |", "|---|---|---|---|---|---|"]
    for s, r in results.items():
        for k, x in enumerate(r["runs"]):
            lines.append(f"| {s} | {x.get('seed', k)} | {x['leaf_acc']:.4f} | {x['level1_acc']:.4f} | {x['hf1']:.4f} "
                         f"| {x['seconds']:.0f} |")
    return "\n".join(lines) + "\n"
