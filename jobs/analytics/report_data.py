"""The figures of one ``vtag report`` (:class:`ReportData`) and the report's fixed sizes.

Shared by the numbers side (:mod:`vtag.jobs.analytics.report`: the queries that fill it) and the drawing side
(:mod:`vtag.jobs.analytics.report_render`: charts and the page), so neither imports the other's module for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

SCORE_BINS = 20
TOP_LEAVES = 15
TREND_DAYS = 14
NO_NODE = "（无此层级）"  # the leaf lies above this level


@dataclass
class ReportData:
    day: str
    compare: str | None
    days: list[str]
    leaves: pd.DataFrame  # dt, leaf_id, level1..level5, n  (D and D0)
    score_bins: pd.DataFrame  # dt, bin, n  (primary score)
    tag_score_bins: pd.DataFrame  # tag_level, bin, n  (all labels of D)
    cover: pd.DataFrame  # dt, n, missing  (last TREND_DAYS days up to D)
    quarantine: pd.DataFrame  # reason, n  (D)
    runs: pd.DataFrame  # the runs of D
    versions: pd.DataFrame  # taxonomy_version, model_version, n  (D)
    drift: dict[int, float | None] = field(default_factory=dict)  # level -> JS divergence (None: no D0)
    #: dt, rows_read, rows_quarantined, rate: the latest successful run of each trend day (the gate's rate)
    quarantine_trend: pd.DataFrame = field(default_factory=pd.DataFrame)
    max_quarantine_rate: float = 0.05
    max_drift: float = 0.1

    @property
    def trend_days(self) -> list[str]:
        """The days of the trend charts: the last days present up to D, at most :data:`TREND_DAYS`."""
        return [d for d in self.days if d <= self.day][-TREND_DAYS:]

    def checks(self) -> list[dict[str, Any]]:
        """The quality gate's checks of D as the report sees them: name, ok (None: not checkable),
        value, threshold and a one-line text (``vtag quality`` is the gate; this is its picture)."""
        out: list[dict[str, Any]] = []
        runs = self.runs[self.runs["job"].isin(["tag", "retag"])] if len(self.runs) else self.runs
        last = runs.iloc[-1] if len(runs) else None
        ok = None if last is None else str(last["status"]) == "succeeded"
        out.append({"name": "run", "ok": ok, "value": None if last is None else str(last["status"]),
                    "threshold": "succeeded", "text": "no run recorded" if last is None else
                    f"latest run {last['run_id']}: {last['status']}"})
        if last is not None and not pd.isna(last["rows_read"]) and not pd.isna(last["rows_tagged"]):
            read, tagged, quar = int(last["rows_read"]), int(last["rows_tagged"]), int(last["rows_quarantined"])
            out.append({"name": "invariant", "ok": read == tagged + quar, "value": read - tagged - quar, "threshold": 0,
                        "text": f"rows read {read} = {tagged} tagged + {quar} quarantined" if read == tagged + quar
                        else f"rows read {read} != {tagged} tagged + {quar} quarantined"})
        rate = self.quarantine_rate
        out.append({"name": "quarantine_rate", "ok": None if rate is None else rate <= self.max_quarantine_rate,
                    "value": rate, "threshold": self.max_quarantine_rate,
                    "text": "no successful run" if rate is None else
                    f"{rate:.2%} {'<=' if rate <= self.max_quarantine_rate else '>'} {self.max_quarantine_rate:.0%}"})
        js = self.drift.get(1)
        out.append({"name": "drift", "ok": None if js is None else js <= self.max_drift, "value": js,
                    "threshold": self.max_drift, "text": "no earlier day to compare" if js is None else
                    f"level 1 vs {self.compare}: {js:.3f} {'<=' if js <= self.max_drift else '>'} {self.max_drift}"})
        return out

    @property
    def quarantine_rate(self) -> float | None:
        t = self.quarantine_trend
        row = t[t.dt == self.day] if len(t) else t
        return None if not len(row) else float(row["rate"].iloc[0])

    @property
    def n_tagged(self) -> int:
        return int(self.leaves.loc[self.leaves.dt == self.day, "n"].sum())

    @property
    def n_quarantined(self) -> int:
        return int(self.quarantine["n"].sum()) if len(self.quarantine) else 0
