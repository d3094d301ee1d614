"""Tiny hand-made dump days with one row of every bad kind, for the tagging-job tests.

``_rows(tag, n)`` -> (n good rows, [(bad row, expected quarantine reason)]).
"""

from __future__ import annotations

import io
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from vtag.models.schema import DUMP_SCHEMA

TS = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)


def _jpeg(color=(30, 160, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), color).save(buf, format="JPEG")
    return buf.getvalue()


def _rows(tag: str, n_good: int):
    good = [
        {"video_id": f"{tag}-{i}", "title": "【王者荣耀】上分 多人竞技" if i % 2 else "家常菜 美食 做法",
         "description": None, "cover": _jpeg() if i % 3 else None, "cover_uri": None,
         "uploader_id": f"u{i % 4}", "source_program": None, "duration_s": 30 + i, "upload_ts": TS}
        for i in range(n_good)
    ]
    bad = [
        ({**good[0], "video_id": None}, "null_video_id"),
        ({**good[0], "upload_ts": datetime(2026, 11, 19, tzinfo=timezone.utc)}, "duplicate_video_id"),
        ({**good[1], "video_id": f"{tag}-big", "title": "长" * 2000}, "overlong"),
        ({**good[1], "video_id": f"{tag}-junk", "cover": b"junk bytes"}, "undecodable_cover"),
        ({**good[1], "video_id": f"{tag}-corrupt", "cover": b"\xff\xd8\xff\xe0" + b"\x00" * 40}, "undecodable_cover"),
        ({**good[1], "video_id": f"{tag}-empty", "title": "", "description": None, "cover": None}, "empty_content"),
    ]
    return good, bad


def _write_day(root, dt, rows):
    day = root / f"dt={dt}"
    day.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([f.with_nullable(True) for f in DUMP_SCHEMA])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), day / "part-0.parquet")
    (day / "_SUCCESS").write_text("")
