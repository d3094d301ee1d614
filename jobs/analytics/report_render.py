"""The report's page: matplotlib charts (PNG, base64 inline) and the HTML around them.

Chinese labels need a CJK font: Noto Sans SC from the ``pylopdf-fonts-zh-cn`` package, registered
with matplotlib's font manager (a clear error when the package is missing). Every value that reaches
the page is HTML-escaped; the page loads nothing from outside (no scripts, no fonts, no images).
"""

from __future__ import annotations

import base64
import html
import importlib.util
import io
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from vtag.models.schema import MAX_LEVELS

if TYPE_CHECKING:  # pragma: no cover
    from vtag.jobs.analytics.report_data import ReportData

FONT_PACKAGE = "pylopdf_fonts_zh_cn"
FONT_FILE = "NotoSansSC-Regular.otf"
COLOR_D, COLOR_D0 = "#2f6db5", "#b0b8c4"


@lru_cache(maxsize=1)
def cjk_font() -> str:
    """Register Noto Sans SC with matplotlib; returns its family name."""
    from matplotlib import font_manager

    spec = importlib.util.find_spec(FONT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the CJK font package is missing: pip install pylopdf-fonts-zh-cn ({FONT_PACKAGE})")
    path = Path(list(spec.submodule_search_locations)[0]) / FONT_FILE
    if not path.is_file():
        raise RuntimeError(f"{path} is missing from {FONT_PACKAGE}")
    font_manager.fontManager.addfont(str(path))
    return font_manager.FontProperties(fname=str(path)).get_name()


def font_face_css(text: str) -> str:
    """An ``@font-face`` with Noto Sans SC subset to the characters of ``text``, inline (base64).

    The page then shows its Chinese text in any browser, with or without CJK fonts installed, and
    stays small (the subset is a few dozen KB where the whole font is 8 MB).
    """
    from fontTools import subset

    cjk_font()
    spec = importlib.util.find_spec(FONT_PACKAGE)
    path = Path(list(spec.submodule_search_locations)[0]) / FONT_FILE
    options = subset.Options()
    options.flavor = None
    options.layout_features = ["*"]
    options.notdef_outline = True
    font = subset.load_font(str(path), options)
    subsetter = subset.Subsetter(options)
    subsetter.populate(text="".join(sorted(set(text) | set("0123456789%.,:-/ "))))
    subsetter.subset(font)
    buf = io.BytesIO()
    subset.save_font(font, buf, options)
    b64 = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'@font-face{{font-family:"vtag-cjk";src:url(data:font/otf;base64,{b64}) format("opentype")}}'


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float, integer_x: bool = False):
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(width, height))
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, ax


# ---------------------------------------------------------------------------------------- charts
def chart_level1(d: ReportData) -> str:
    counts = d.leaves.groupby(["level1", "dt"])["n"].sum().unstack(fill_value=0)
    counts = counts.sort_values(d.day, ascending=True) if d.day in counts else counts
    fig, ax = _figure(7.5, max(2.5, 0.38 * len(counts) + 1), integer_x=True)
    y = range(len(counts))
    h = 0.4 if d.compare else 0.7
    ax.barh([i + (h / 2 if d.compare else 0) for i in y], counts.get(d.day, 0), height=h, color=COLOR_D, label=d.day)
    if d.compare and d.compare in counts:
        ax.barh([i - h / 2 for i in y], counts[d.compare], height=h, color=COLOR_D0, label=d.compare)
    ax.set_yticks(list(y), [str(v) for v in counts.index])
    ax.set_xlabel("视频数")
    ax.set_title("一级类目的视频数")
    ax.legend(loc="lower right")
    return _png(fig)


def leaf_label(row) -> str:
    names = [row[f"level{i}"] for i in range(1, MAX_LEVELS + 1) if row[f"level{i}"] is not None]
    return " / ".join(str(n) for n in names) or str(row["leaf_id"])


def top_leaves(d: ReportData, k: int) -> pd.DataFrame:
    day = d.leaves[d.leaves.dt == d.day].copy()
    day["label"] = day.apply(leaf_label, axis=1)
    top = day.groupby(["leaf_id", "label"], as_index=False)["n"].sum()
    return top.sort_values(["n", "leaf_id"], ascending=[False, True]).head(k)


def chart_top_leaves(d: ReportData, k: int) -> str:
    top = top_leaves(d, k).iloc[::-1]
    fig, ax = _figure(7.5, max(2.5, 0.34 * len(top) + 1), integer_x=True)
    ax.barh(range(len(top)), top["n"], color=COLOR_D)
    ax.set_yticks(range(len(top)), list(top["label"]))
    ax.set_xlabel("视频数")
    ax.set_title(f"最多的叶子类目（前 {k}）")
    return _png(fig)


def chart_scores(d: ReportData, bins: int) -> str:
    import matplotlib.pyplot as plt

    edges = [i / bins for i in range(bins + 1)]
    centers = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.4))
    for day, color in ((d.day, COLOR_D), (d.compare, COLOR_D0)):
        if not day:
            continue
        s = d.score_bins[d.score_bins.dt == day].set_index("bin")["n"].reindex(range(bins), fill_value=0)
        share = s / max(1, s.sum())
        a1.step(centers, share.values, where="mid", color=color, label=day, linewidth=2)
    a1.set_xlabel("主叶子分数")
    a1.set_ylabel("占比")
    a1.set_title("主叶子分数分布")
    a1.legend()
    for level, grp in d.tag_score_bins.groupby("tag_level"):
        s = grp.set_index("bin")["n"].reindex(range(bins), fill_value=0)
        a2.plot(centers, (s / max(1, s.sum())).values, marker=".", label=f"第 {int(level)} 层")
    a2.set_xlabel("标签分数")
    a2.set_title(f"{d.day} 全部标签的分数（按层级）")
    if len(d.tag_score_bins):
        a2.legend(fontsize=8)
    return _png(fig)


def chart_cover(d: ReportData) -> str:
    c = d.cover.copy()
    c["share"] = c["missing"] / c["n"].where(c["n"] > 0, 1)
    fig, ax = _figure(7.5, 2.8)
    colors = [COLOR_D if x == d.day else COLOR_D0 for x in c["dt"]]
    ax.bar(range(len(c)), 100 * c["share"], color=colors)
    ax.set_xticks(range(len(c)), [x[5:] for x in c["dt"]], rotation=45 if len(c) > 7 else 0)
    ax.set_ylabel("% 无封面")
    ax.set_title(f"无封面（cover_missing）的比例，最近 {len(c)} 天（最多 14 天）")
    return _png(fig)


COLOR_FAIL = "#c0504d"
COLOR_OK = "#4f81bd"


def chart_quarantine(d: ReportData) -> str | None:
    """Two panels: the day's reasons, and the quarantine rate of the trend days against the gate's
    threshold (a dashed line; bars above it in red)."""
    import matplotlib.pyplot as plt

    t = d.quarantine_trend
    if not len(d.quarantine) and not len(t):
        return None
    qd = d.quarantine.iloc[::-1]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, max(2.8, 0.4 * len(qd) + 1)), dpi=100,
                                 gridspec_kw={"width_ratios": [1.1, 1]})
    a1.barh(range(len(qd)), qd["n"], color=COLOR_FAIL)
    a1.set_yticks(range(len(qd)), list(qd["reason"]))
    a1.set_xlabel("行数")
    a1.set_title(f"{d.day} 隔离原因")
    limit = 100 * d.max_quarantine_rate
    rates = [100 * float(x) for x in t["rate"]] if len(t) else []
    a2.bar(range(len(rates)), rates, color=[COLOR_FAIL if x > limit else COLOR_OK for x in rates])
    a2.axhline(limit, color="#333", linestyle="--", linewidth=1.2)
    a2.text(len(rates) - 0.5 if rates else 0, limit, f" 门限 {limit:g}%", va="bottom", ha="right", fontsize=9)
    a2.set_xticks(range(len(rates)), [x[5:] for x in t["dt"]] if len(t) else [], rotation=45 if len(rates) > 7 else 0)
    a2.set_ylim(0, max([limit * 1.4] + [x * 1.2 for x in rates]))
    a2.set_ylabel("% 隔离（行）")
    a2.set_title(f"隔离率，最近 {len(rates)} 天")
    fig.tight_layout()
    return _png(fig)


def chart_drift(d: ReportData) -> str | None:
    if not d.compare:
        return None
    levels = [h for h, v in d.drift.items() if v is not None]
    fig, ax = _figure(7.5, 2.8)
    vals = [d.drift[h] for h in levels]
    colors = [(COLOR_FAIL if v > d.max_drift else COLOR_OK) if h == 1 else COLOR_D0 for h, v in zip(levels, vals)]
    ax.bar([f"第 {h} 层" + ("（门限检查）" if h == 1 else "") for h in levels], vals, color=colors)
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=9)
    ax.axhline(d.max_drift, color="#333", linestyle="--", linewidth=1.2)
    ax.text(len(vals) - 0.5, d.max_drift, f"门限 {d.max_drift:g}（只检查第 1 层）", va="bottom", ha="right", fontsize=9)
    ax.set_ylim(0, max(0.05, d.max_drift * 1.3, max(vals) * 1.25))
    ax.set_ylabel("JS 散度（bit）")
    ax.set_title(f"各层级分布漂移：{d.day} 对比 {d.compare}")
    return _png(fig)


# ------------------------------------------------------------------------------------------ page
def _e(v) -> str:
    """A cell value as escaped text (missing values empty, floats with one decimal)."""
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:,.1f}"
    return html.escape(str(v))


def _table(frame: pd.DataFrame, cls: str = "") -> str:
    if not len(frame):
        return '<p class="none">（无）</p>'
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in frame.itertuples(index=False, name=None)
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _img(b64: str | None, alt: str) -> str:
    if b64 is None:
        return f'<p class="none">（{html.escape(alt)}：无数据）</p>'
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


CSS = """
body{font-family:"vtag-cjk","Noto Sans SC","Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:24px auto;max-width:1100px;
color:#222;background:#fff;line-height:1.45}
h1{font-size:24px;margin-bottom:4px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin-top:0}.badges{display:flex;gap:8px;flex-wrap:wrap;margin:10px 0}
.badge{border-radius:4px;padding:4px 10px;font-size:13px;color:#fff}.badge.pass{background:#2e7d32}
.badge.fail{background:#c62828}.badge.na{background:#888}.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:22px}.card span{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left}
th{background:#f3f5f8}.failed td{background:#fdecea}.none{color:#888}img{max-width:100%}
"""


def render_html(d: ReportData) -> str:
    """The whole page for ``d`` (a :class:`vtag.jobs.analytics.report_data.ReportData`)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import rc_context

    from vtag.jobs.analytics.report_data import SCORE_BINS, TOP_LEAVES

    family = cjk_font()
    with rc_context({"font.family": [family, "DejaVu Sans"], "axes.unicode_minus": False}):
        charts = {
            "level1": chart_level1(d),
            "leaves": chart_top_leaves(d, TOP_LEAVES),
            "scores": chart_scores(d, SCORE_BINS),
            "cover": chart_cover(d),
            "quarantine": chart_quarantine(d),
            "drift": chart_drift(d),
        }
    today = d.cover[d.cover.dt == d.day]
    missing_share = float(today["missing"].sum()) / max(1, int(today["n"].sum()))
    cards = [
        (f"{d.n_tagged:,}", "已打标签的视频"),
        (f"{d.n_quarantined:,}", "隔离的行"),
        (f"{100 * missing_share:.1f}%", "无封面"),
        (str(len(d.runs)), "当天的运行"),
    ]
    if d.compare and d.drift.get(1) is not None:
        worst = max(((h, v) for h, v in d.drift.items() if v is not None), key=lambda hv: hv[1])
        cards.append((f"{d.drift[1]:.3f}", f"第 1 层漂移（JS，门限 {d.max_drift:g}）对比 {d.compare}；"
                                          f"最大为第 {worst[0]} 层 {worst[1]:.3f}"))
    cards_html = "".join(f'<div class="card"><b>{html.escape(v)}</b><span>{html.escape(t)}</span></div>' for v, t in cards)
    drift_rows = pd.DataFrame(
        [{"层级": h, "JS 散度": ("" if v is None else f"{v:.4f}")} for h, v in d.drift.items()]
    )
    runs_html = _mark_failed(_table(d.runs), list(d.runs["status"])) if len(d.runs) else _table(d.runs)
    compare_text = f"对比 {html.escape(d.compare)}" if d.compare else "（没有更早的日期可对比）"
    badges_html = "".join(
        f'<span class="badge {"na" if c["ok"] is None else "pass" if c["ok"] else "fail"}" data-check="{c["name"]}">'
        f'{"N/A" if c["ok"] is None else "PASS" if c["ok"] else "FAIL"} {html.escape(c["name"])}: {html.escape(c["text"])}</span>'
        for c in d.checks()
    )
    title = f"vtag 报告 {html.escape(d.day)}"
    body = f"""<h1>vtag 视频类型标签日报：{html.escape(d.day)}</h1>
<p class="sub">{compare_text}；仓库中的日期（{len(d.days)} 天）：{html.escape(", ".join(d.days[-14:]))}</p>
<div class="badges">{badges_html}</div>
<div class="cards">{cards_html}</div>
<h2>一级类目</h2>{_img(charts["level1"], "一级类目")}
<h2>叶子类目</h2>{_img(charts["leaves"], "叶子类目")}
<h2>分数分布</h2>{_img(charts["scores"], "分数分布")}
<h2>无封面比例</h2>{_img(charts["cover"], "无封面比例")}
<h2>隔离原因</h2>{_img(charts["quarantine"], "隔离原因")}{_table(d.quarantine)}
<h2>分布漂移（Jensen–Shannon）</h2>{_img(charts["drift"], "分布漂移")}{_table(drift_rows)}
<h2>当天的运行（tag_runs）</h2>{runs_html}
<h2>版本</h2>{_table(d.versions)}
"""
    fonts = font_face_css(html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"src=\"data:[^\"]*\"", "", body))) + title)
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>{title}</title>
<style>{fonts}{CSS}</style></head><body>
{body}</body></html>
"""


def _mark_failed(table_html: str, statuses: list) -> str:
    """Give the body rows of runs whose status is not ``succeeded`` the ``failed`` class."""
    head, sep, body = table_html.partition("<tbody>")
    if not sep:
        return table_html
    rows = body.split("<tr>")
    out = [rows[0]]
    for status, row in zip(statuses, rows[1:]):
        out.append(('<tr class="failed">' if str(status) != "succeeded" else "<tr>") + row)
    return head + sep + "".join(out)
