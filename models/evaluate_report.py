"""How ``vtag evaluate`` prints its report: the metrics' legend, the overall table, the per uploader
group and per level-1 subtree tables (:mod:`vtag.models.evaluate` computes the report)."""

from __future__ import annotations

from typing import Any, Mapping

#: metric -> one-line meaning (printed under the table; ``vtag evaluate --json`` carries it as ``legend``)
LEGEND: dict[str, str] = {
    "n": "rows scored",
    "leaf_acc": "share of rows whose predicted primary node is exactly the true one",
    "levelN_acc": "share of rows whose level-N node on the predicted path is the true one",
    "hp": "hierarchical precision: of the predicted nodes (ancestors included), the share that are true",
    "hr": "hierarchical recall: of the true nodes (ancestors included), the share that were predicted",
    "hf1": "hierarchical F1: harmonic mean of hp and hr, over all rows pooled (micro)",
    "hf1_macro": "hierarchical F1 averaged per row (macro)",
    "auprc": "area under the precision-recall curve of the consistent node scores, all nodes pooled",
    "violations": "share of rows whose decoded label set breaks a taxonomy constraint (should be 0)",
}


def legend(keys: list[str]) -> dict[str, str]:
    """The :data:`LEGEND` lines of ``keys`` (``level3_acc`` explained by ``levelN_acc``).

    Parameters
    ----------
    keys
        Metric names as reported.
    """
    out = {}
    for k in keys:
        if k in LEGEND:
            out[k] = LEGEND[k]
        elif k.startswith("level") and k.endswith("_acc"):
            out[k] = LEGEND["levelN_acc"].replace("N", k[len("level"):-len("_acc")])
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def render(report: Mapping[str, Any], by_day: bool = False) -> None:
    """Print the report as tables: overall, per uploader group, per level-1 subtree, and with
    ``by_day`` per day."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    ov = report["overall"]
    keys = [k for k in ("n", "leaf_acc") if k in ov]
    keys += sorted(k for k in ov if k.startswith("level") and k.endswith("_acc"))
    keys += [k for k in ("hp", "hr", "hf1", "hf1_macro", "auprc", "violations") if k in ov]
    t = Table(title=f"{report.get('bundle', '')} on {report.get('data', '')} — model {report.get('model_version', '')}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k in keys:
        t.add_row(k, _fmt(ov[k]))
    console.print(t)
    for k, text in legend(keys).items():
        console.print(f"  {k}: {text}", highlight=False)
    if report.get("replay_min_score") is not None:
        info = report.get("replay") or {}
        console.print(f"  scored day by day as the nightly job meets the rows: each day with the uploader profiles "
                      f"of the bundle plus the model's tags (score >= {report['replay_min_score']}, each counted "
                      f"{'by its score' if report.get('replay_count') == 'score' else 'as 1'}) of the days "
                      f"before ({info.get('days', 0)} days; {info.get('rows_with_tag_history', 0):,} rows had a "
                      "tagged earlier video of their uploader; --no-replay: the bundle's profiles alone)",
                      highlight=False)
    lab = report.get("labels") or {}
    unscored = int(lab.get("rows_without_label", 0)) + int(lab.get("rows_unknown_label", 0))
    if unscored:
        names = ", ".join(f"{k!r} {v}" for k, v in (lab.get("unknown_labels") or {}).items())
        console.print(f"  {unscored:,} of {report.get('rows', 0):,} rows were tagged (and replayed) but not scored: "
                      f"{lab.get('rows_without_label', 0):,} without a label, {lab.get('rows_unknown_label', 0):,} "
                      f"whose primary label is not in the bundle's taxonomy" + (f" (most frequent: {names})" if names
                                                                              else ""), highlight=False)
    _render_uploaders(console, report.get("uploaders"))
    if report.get("subtrees"):
        cols = [k for k in ("n", "leaf_acc", "level2_acc", "hf1", "auprc", "violations") if k in ov]
        s = Table(title="per level-1 subtree (rows whose true primary path starts there)")
        s.add_column("level-1")
        for c in cols:
            s.add_column(c, justify="right")
        for nid, m in report["subtrees"].items():
            s.add_row(f"{nid} {m.get('name', '')}", *[_fmt(m.get(c, "")) for c in cols])
        console.print(s)
    if by_day:
        _render_days(console, report.get("days"))


def _render_days(console, days: Mapping[str, Any] | None) -> None:
    from rich.table import Table

    if not days:
        return
    with_returning = any("returning" in m for m in days.values())
    cols = ["n", "leaf_acc", "level1_acc", "hf1"] + (["returning"] if with_returning else [])
    t = Table(title="per day (dt, else the upload date)")
    t.add_column("day")
    for c in cols:
        t.add_column(c, justify="right")
    for day, m in days.items():
        t.add_row(day, *[_fmt(m.get(c, "")) for c in cols])
    console.print(t)
    if with_returning:
        console.print("  returning: the day's share of rows whose uploader has training rows", highlight=False)


def _render_uploaders(console, uploaders: Mapping[str, Any] | None) -> None:
    from rich.table import Table

    if not uploaders or not uploaders.get("groups"):
        return
    t = Table(title="by what the model knew of the uploader")
    for c in ("uploader", "rows", "share", "leaf_acc", "level1_acc", "hf1"):
        t.add_column(c, justify="left" if c == "uploader" else "right")
    for g, m in uploaders["groups"].items():
        t.add_row(g, *[_fmt(m.get(c, "")) for c in ("rows", "share", "leaf_acc", "level1_acc", "hf1")])
    console.print(t)
    for g, text in uploaders.get("legend", {}).items():
        console.print(f"  {g}: {text}", highlight=False)
