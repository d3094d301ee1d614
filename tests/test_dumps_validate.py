"""Reading a dump day (Parquet and JSONL) and validating rows into valid / quarantined."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.builders import jpeg_bytes
from vtag.models.schema import DUMP_SCHEMA

pytestmark = pytest.mark.spark

TS = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)


def _jpeg() -> bytes:
    return jpeg_bytes((200, 30, 30), size=(16, 12))


def _row(vid, **kw):
    row = {
        "video_id": vid,
        "title": "【王者荣耀】新赛季上分攻略",
        "description": "打野思路分享",
        "cover": _jpeg(),
        "cover_uri": None,
        "uploader_id": "u1",
        "source_program": "app",
        "duration_s": 60,
        "upload_ts": TS,
    }
    row.update(kw)
    return row


# (row, expected reason or None)
PARQUET_CASES = [
    (_row("ok1"), None),
    (_row("ok2", cover=None, description=None), None),
    (_row("trunc", cover=_jpeg()[:40]), "undecodable_cover"),
    (_row(None), "null_video_id"),
    (_row("  "), "null_video_id"),
    (_row("long", title="长" * 600), "overlong"),
    (_row("garbage", cover=b"not an image at all"), "undecodable_cover"),
    (_row("empty", title="", description=None, cover=None), "empty_content"),
    (_row("neg", duration_s=-5), "invalid_duration"),
    (_row("dup", upload_ts=datetime(2026, 11, 20, 9, tzinfo=timezone.utc)), None),
    (_row("dup", upload_ts=datetime(2026, 11, 20, 7, tzinfo=timezone.utc)), "duplicate_video_id"),
    (_row("notitle", title=""), None),  # no title but a cover and a description: taggable
]


def _write_parquet_day(root, dt, rows):
    day = root / f"dt={dt}"
    day.mkdir(parents=True)
    table = pa.Table.from_pylist(rows, schema=_nullable(DUMP_SCHEMA))
    pq.write_table(table, day / "part-0.parquet")
    (day / "_SUCCESS").write_text("")
    return day


def _nullable(schema):
    return pa.schema([f.with_nullable(True) for f in schema])


def _collect(spark, root, dt):
    from vtag.jobs.pipeline.dumps import read_day
    from vtag.jobs.pipeline.validate import mark

    rows = mark(read_day(spark, str(root), dt)).select("video_id", "reason", "detail", "_raw").collect()
    from vtag.jobs.warehouse.reasons import REASONS

    assert {r.reason for r in rows if r.reason} <= set(REASONS)  # codes of the one list, nothing else
    return rows


def test_parquet_validation_reasons(spark, tmp_path):
    _write_parquet_day(tmp_path, "2026-11-20", [r for r, _ in PARQUET_CASES])
    rows = _collect(spark, tmp_path, "2026-11-20")
    assert len(rows) == len(PARQUET_CASES)  # nothing dropped
    got = sorted((r.video_id or "", r.reason or "") for r in rows)
    want = sorted((r["video_id"] or "", reason or "") for r, reason in PARQUET_CASES)
    assert got == want
    raw = json.loads(next(r for r in rows if r.video_id == "garbage")._raw)
    assert raw["cover"].startswith("base64:") and "bytes)" in raw["cover"]
    details = {r.video_id: r.detail for r in rows if r.reason}
    assert details["long"] == "title: 600 chars > 512" and details["neg"] == "duration_s: -5"
    assert "do not decode" in details["garbage"] and "kept" in details["dup"]


def test_corrupt_covers_are_tagged_under_the_tag_policy(spark, tmp_path):
    from vtag.jobs.pipeline.dumps import read_day
    from vtag.jobs.pipeline.validate import mark

    _write_parquet_day(tmp_path, "2026-11-24", [r for r, _ in PARQUET_CASES])
    rows = mark(read_day(spark, str(tmp_path), "2026-11-24"), corrupt_cover="tag").select("video_id", "reason")
    got = {(r.video_id or ""): r.reason for r in rows.collect()}
    assert got["trunc"] is None and got["garbage"] is None and got["ok1"] is None


def test_parquet_wrong_type_is_named(spark, tmp_path):
    day = tmp_path / "dt=2026-11-21"
    day.mkdir(parents=True)
    ts = pa.array([datetime(2026, 11, 21, tzinfo=timezone.utc)] * 2)
    table = pa.table({"video_id": ["a", "b"], "title": ["标题", "标题"], "duration_s": ["12", "abc"],
                      "uploader_id": ["u", "u"], "upload_ts": ts})
    pq.write_table(table, day / "part-0.parquet")
    (day / "_SUCCESS").write_text("")
    rows = {r.video_id: (r.reason, r.detail) for r in _collect(spark, tmp_path, "2026-11-21")}
    assert rows == {"a": (None, None), "b": ("wrong_type", "duration_s: abc is not a int")}


def test_jsonl_reasons(spark, tmp_path):
    day = tmp_path / "dt=2026-11-22"
    day.mkdir(parents=True)
    good = {"video_id": "j1", "title": "猫咪日常", "description": None,
            "cover": base64.b64encode(_jpeg()).decode(), "uploader_id": "u", "source_program": None,
            "duration_s": 30, "upload_ts": "2026-11-22T01:02:03.000Z"}
    lines = [
        json.dumps(good, ensure_ascii=False).encode(),
        json.dumps({**good, "video_id": "j2", "duration_s": "abc"}).encode(),
        json.dumps({**good, "video_id": "j3", "title": ["a", "list"]}).encode(),
        b'{"video_id": "j4", "title": "\xff\xfe bad utf8", "uploader_id": "u"}',
        b'{"video_id": "j5", "title": ',
        json.dumps({**good, "video_id": "j6", "cover": "!!notbase64!!"}).encode(),
    ]
    (day / "part-0.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (day / "_SUCCESS").write_text("")
    rows = _collect(spark, tmp_path, "2026-11-22")
    assert len(rows) == len(lines)
    got = sorted((r.reason or "ok", (r.detail or "").split(":")[0]) for r in rows)
    assert got == sorted([("ok", ""), ("wrong_type", "duration_s"), ("wrong_type", "title"), ("invalid_utf8", "byte 29"),
                          ("malformed_json", "Expecting value"), ("wrong_type", "cover")])


def test_missing_success_marker_is_refused(spark, tmp_path):
    from vtag.jobs.pipeline.dumps import DumpNotReadyError, read_day

    day = _write_parquet_day(tmp_path, "2026-11-23", [_row("x")])
    (day / "_SUCCESS").unlink()
    with pytest.raises(DumpNotReadyError, match="_SUCCESS"):
        read_day(spark, str(tmp_path), "2026-11-23")
    assert read_day(spark, str(tmp_path), "2026-11-23", require_success=False).count() == 1
    with pytest.raises(DumpNotReadyError, match="does not exist"):
        read_day(spark, str(tmp_path), "2026-01-01")
