"""`vtag report`: the numbers (Jensen–Shannon drift, defaults), both engines, and a page that renders."""

from __future__ import annotations

import argparse
import base64
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from vtag.jobs.analytics import report


def test_js_divergence():
    assert report.js_divergence({"a": 3, "b": 1}, {"a": 6, "b": 2}) == pytest.approx(0.0)
    assert report.js_divergence({"a": 1}, {"b": 5}) == pytest.approx(1.0)
    v = report.js_divergence({"a": 1, "b": 1}, {"a": 1})
    assert 0 < v < 1
    assert v == pytest.approx(report.js_divergence({"a": 1}, {"a": 1, "b": 1}))  # symmetric
    with pytest.raises(ValueError):
        report.js_divergence({}, {"a": 1})


def _duck(wh):
    return report.duckdb_query(wh.conf)


@pytest.mark.spark
def test_collect_defaults_and_errors(spark, analysts_warehouse):
    wh = analysts_warehouse
    q, close = _duck(wh)
    try:
        d = report.collect(q, "2024-06-03")
        assert d.compare == "2024-06-02" and d.days == list(wh.days)
        assert d.n_tagged == len(wh.rows["2024-06-03"]) and d.n_quarantined == len(wh.quarantine["2024-06-03"])
        assert [r for r in d.runs["status"]] == ["failed", "succeeded"]
        assert set(d.drift) == {1, 2, 3, 4, 5} and all(0 <= v <= 1 for v in d.drift.values())
        assert d.drift[1] > 0.01  # the third day drifts on purpose
        # level 1 by hand from the fixture rows
        mine = {}
        for r in wh.rows["2024-06-03"]:
            mine[(r["level1"],)] = mine.get((r["level1"],), 0) + 1
        assert report.level_distribution(d.leaves, "2024-06-03", 1) == mine
        first = report.collect(q, "2024-06-01")
        assert first.compare is None and set(first.drift.values()) == {None}
        with pytest.raises(report.ReportError, match="days present: 2024-06-01"):
            report.collect(q, "2024-07-01")
        with pytest.raises(report.ReportError, match="not a YYYY-MM-DD"):
            report.collect(q, "yesterday")
        with pytest.raises(report.ReportError, match="another day"):
            report.collect(q, "2024-06-03", "2024-06-03")
    finally:
        close()


@pytest.mark.spark
@pytest.mark.slow  # ~4.5 s: keeps `pytest -m "not slow"` under 2 minutes
def test_spark_engine_gives_the_same_numbers(spark, analysts_warehouse):
    from vtag.jobs.analytics.sql import prepare

    wh = analysts_warehouse
    prepare(spark, wh.conf)
    s = report.collect(lambda sql: spark.sql(sql).toPandas(), "2024-06-03", "2024-06-01")
    q, close = _duck(wh)
    try:
        d = report.collect(q, "2024-06-03", "2024-06-01")
    finally:
        close()
    assert s.drift == pytest.approx(d.drift)
    for name in ("leaves", "score_bins", "tag_score_bins", "cover", "quarantine", "versions"):
        a, b = getattr(s, name), getattr(d, name)
        key = list(a.columns)
        a = a.astype(str).sort_values(key).reset_index(drop=True)
        b = b.astype(str).sort_values(key).reset_index(drop=True)
        assert a.equals(b), name


@pytest.mark.spark
def test_gate_checks_thresholds_and_trend_days(spark, analysts_warehouse, tmp_path_factory, capsys):
    """#19 item 10: a pass/fail badge per check, the thresholds drawn, the headline drift is level 1,
    and the trend shows every day present up to D (at most 14), not a calendar window."""
    import json

    wh = analysts_warehouse
    q, close = _duck(wh)
    try:
        d = report.collect(q, "2024-06-03")
        strict = report.collect(q, "2024-06-03", max_quarantine_rate=0.01, max_drift=0.001)
    finally:
        close()
    assert d.trend_days == ["2024-06-01", "2024-06-02", "2024-06-03"] == list(d.cover["dt"])
    assert list(d.quarantine_trend["dt"]) == d.trend_days
    run = [r for r in wh.runs if r["dt"] == "2024-06-03" and r["status"] == "succeeded"][-1]
    assert d.quarantine_rate == pytest.approx(run["rows_quarantined"] / run["rows_read"])
    checks = {c["name"]: c for c in d.checks()}
    assert set(checks) == {"run", "invariant", "quarantine_rate", "drift"}
    assert checks["run"]["ok"] and checks["invariant"]["ok"]
    assert checks["drift"]["value"] == d.drift[1] and checks["drift"]["threshold"] == 0.1
    assert checks["quarantine_rate"]["ok"] == (d.quarantine_rate <= 0.05)
    s = {c["name"]: c["ok"] for c in strict.checks()}
    assert s["quarantine_rate"] is False and s["drift"] is False  # the thresholds are the ones given
    first = {c["name"]: c["ok"] for c in report.collect(report.duckdb_query(wh.conf)[0], "2024-06-01").checks()}
    assert first["drift"] is None  # nothing to compare with: not a pass

    page = tmp_path_factory.mktemp("gate") / "r.html"
    argv = ["report", "--date", "2024-06-03", "--out", str(page), "--warehouse", str(wh.warehouse),
            "--conf", f"dump_root={wh.dump_root}", "--max-drift", "0.001", "--json"]
    from vtag.jobs.cli import main as cli_main

    assert cli_main(argv) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)  # stdout: the JSON only; progress went to stderr, one line per stage
    assert re.search(r"^vtag report: \[\d+\.\ds\] opening the warehouse \(duckdb\)$", captured.err, re.M)
    assert "querying and drawing 2024-06-03" in captured.err
    assert out["ok"] is False and out["trend_days"] == d.trend_days
    assert {c["name"]: c["ok"] for c in out["checks"]}["drift"] is False
    html = page.read_text(encoding="utf-8")
    assert re.search(r'class="badge fail" data-check="drift">FAIL drift: level 1', html)
    assert re.search(r'class="badge pass" data-check="invariant">PASS', html)
    assert "第 1 层漂移（JS，门限 0.001）" in html and "仓库中的日期（3 天）" in html


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.spark
def test_report_renders_in_headless_chromium(spark, analysts_warehouse, tmp_path_factory):
    from PIL import Image, ImageStat

    wh = analysts_warehouse
    out_dir = tmp_path_factory.mktemp("report")
    page = out_dir / "report.html"
    args = argparse.Namespace(date="2024-06-03", compare=None, out=str(page), warehouse=str(wh.warehouse),
                              job_conf=None, conf=[f"dump_root={wh.dump_root}"], engine="duckdb")
    assert report.main(args) == 0
    text = page.read_text(encoding="utf-8")
    # self-contained: charts inline, nothing fetched from elsewhere
    assert text.count("data:image/png;base64,") == 6
    assert not re.search(r"""(src|href)=["'](?!data:)""", text)
    assert "tag-2024-06-03-failed" in text and 'class="failed"' in text and "对比 2024-06-02" in text
    png = base64.b64decode(re.search(r"data:image/png;base64,([^\"]+)", text).group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"

    browser = _chromium()
    assert browser, "chromium is missing: run scripts/ensure_chromium.sh (make test does)"
    shot = out_dir / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        run = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,2000",
             "--hide-scrollbars", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=180,
        )
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    img = Image.open(shot).convert("L")
    assert img.size == (1200, 2000)
    stat = ImageStat.Stat(img)
    non_white = sum(1 for p in img.getdata() if p < 240) / (img.size[0] * img.size[1])
    assert stat.stddev[0] > 20 and non_white > 0.03, (stat.stddev, non_white)
    shutil.copy(shot, Path(tempfile.gettempdir()) / "vtag-report-test.png")  # for a human look


def test_report_main_rejects_a_bad_date(tmp_path, capsys):
    args = argparse.Namespace(date="2024-13-01", compare=None, out=str(tmp_path / "r.html"),
                              warehouse=str(tmp_path / "nowhere"), job_conf=None, conf=[], engine="duckdb")
    assert report.main(args) == 1
    assert "no video_tags Delta table" in capsys.readouterr().err
