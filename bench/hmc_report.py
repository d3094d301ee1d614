"""The reports of ``bench/hmc.py``: one data set's table, the Markdown report of a run, the JSON
summary line and the device line."""

from __future__ import annotations

import json

from hardware import cpu_description, gpu_name, torch_versions  # bench/hardware.py


def format_table(result: dict, heads: list[str]) -> str:
    pub = result.get("published") or {}
    lines = [f"| {result['dataset']} | AU(PRC) mean ± std | epochs | vs HMCN-F | vs C-HMCNN |",
             "|---|---|---|---|---|"]
    for head in heads:
        r = result[head]
        d = [f"{r['auprc_mean'] - pub[k]:+.3f}" if k in pub else "–" for k in ("HMCN-F", "C-HMCNN")]
        lines.append(f"| {head} | {r['auprc_mean']:.3f} ± {r['auprc_std']:.3f} | {r['epochs']} | {d[0]} | {d[1]} |")
    for k in ("HMCN-F", "C-HMCNN"):
        if k in pub:
            lines.append(f"| {k} (published) | {pub[k]:.3f} | | | |")
    lines.append(f"runtime {result['seconds']:.0f} s wall, {result['cpu_seconds']:.0f} s cpu (all its heads)")
    return "\n".join(lines)


def device_description(device: str) -> str:
    """One line naming the hardware the heads ran on (GPU name, or the CPU model and core count)."""
    gpu = gpu_name(device)
    return f"{gpu} ({torch_versions(True)})" if gpu else f"{cpu_description()} ({torch_versions(False)})"


def summary(res: dict, heads: list[str]) -> dict:
    out = {"dataset": res["dataset"]}
    for head in heads:
        out[head] = {k: res[head][k] for k in ("auprc_mean", "auprc_std")}
    return out


def format_markdown(results: list[dict], heads: list[str], *, command: str, device: str, seeds: int,
                    wall_s: float | None = None, pending: list[str] | None = None,
                    failed: dict[str, str] | None = None, skipped: list[str] | None = None,
                    note: str | None = None) -> str:
    """The Markdown report: how it was made, one summary table (AU(PRC) mean ± std per head beside
    the published figures), wins per head, and per-data-set details."""
    import datetime

    results = sorted(results, key=lambda r: r["dataset"])
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# DHMCN heads on the public HMC data sets (bench/hmc.py)", "",
             f"- Command: `{command}`",
             f"- Device: {device}"] + ([f"- {note}"] if note else []) + [
             f"- Written: {now}; {len(results)} data set(s) done"
             + (f", total {wall_s:.0f} s wall" if wall_s is not None else ""),
             f"- Protocol: C-HMCNN's (epoch selection on validation, retrain on train+valid, test AU(PRC) micro "
             f"over non-root classes), one recipe for all data sets (`bench/hmc.py` `Recipe`), {seeds} seed(s).",
             "- Published figures: C-HMCNN(h) and HMCN-F test AU(PRC) from `../shared/data/hmc/README.md`; "
             "✓ = the head's mean is at least HMCN-F's, ✓✓ = at least both.", ""]
    if skipped:
        lines += [f"- Skipped (no train or no test file): {', '.join(skipped)}", ""]
    if pending:
        lines += [f"- **Not finished** (run stopped or still running): {', '.join(pending)}", ""]
    if failed:
        lines += ["- **Failed**: " + "; ".join(f"{k}: {v}" for k, v in failed.items()), ""]
    hdr = "| dataset | " + " | ".join(heads) + " | HMCN-F | C-HMCNN | wall s |"
    lines += [hdr, "|" + "---|" * (len(heads) + 4)]
    wins = {h: [0, 0, 0] for h in heads}  # >= HMCN-F, >= C-HMCNN, data sets with figures
    for r in results:
        pub = r.get("published") or {}
        cells = []
        for h in heads:
            x = r.get(h)
            if not x:
                cells.append("–")
                continue
            mark = ""
            if pub:
                wins[h][2] += 1
                ge_f, ge_c = x["auprc_mean"] >= pub["HMCN-F"], x["auprc_mean"] >= pub["C-HMCNN"]
                wins[h][0] += ge_f
                wins[h][1] += ge_c
                mark = " ✓✓" if ge_c and ge_f else (" ✓" if ge_f else "")
            n = "" if x.get("n_seeds", seeds) == seeds else f" ({x.get('n_seeds')} seeds)"
            cells.append(f"{x['auprc_mean']:.3f} ± {x['auprc_std']:.3f}{mark}{n}")
        pf = f"{pub['HMCN-F']:.3f}" if pub else "–"
        pc = f"{pub['C-HMCNN']:.3f}" if pub else "–"
        lines.append(f"| {r['dataset']} | " + " | ".join(cells) + f" | {pf} | {pc} | {r.get('seconds', 0):.0f} |")
    lines += [""]
    lines += ["| head | ≥ HMCN-F | ≥ C-HMCNN | of (data sets with published figures) |", "|---|---|---|---|"]
    for h in heads:
        lines.append(f"| {h} | {wins[h][0]} | {wins[h][1]} | {wins[h][2]} |")
    lines += ["", "## Details", "",
              "| dataset | head | width | hidden | epochs | valid AU(PRC) | seeds | test AU(PRC) per seed | s (wall) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for h in heads:
            x = r.get(h)
            if x:
                lines.append(f"| {r['dataset']} | {h} | x{x['width']} | {x['hidden']} | {x['epochs']} | "
                             f"{x['valid_auprc']:.4f} | {x['n_seeds']} | {', '.join(f'{v:.4f}' for v in x['auprc'])} | "
                             f"{x['seconds']:.0f} |")
    if results:
        lines += ["", "Recipe: `" + json.dumps(results[0].get("recipe", {})) + "`"]
    return "\n".join(lines) + "\n"
