"""One partition of one day: rows generated in chunks, yielded as Arrow record batches.

Everything is a function of (world, day, partition): chunk ``c`` of partition ``p`` of day ``d``
draws from ``numpy.random.default_rng([seed, d, p, c, stream])`` with separate streams for the
content, the labels and the bad-row mutations, so ``--labeled`` does not change the other columns
and memory stays bounded by one chunk.

Parquet: batches in the dump schema (+ ``labels``). JSON Lines: batches of one binary column
``value`` holding each line's raw bytes (so invalid UTF-8 and wrong types survive the writer).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa

from vtag.jobs.synth.bad import big_text, make_plan
from vtag.jobs.synth.context import ContextMaker
from vtag.jobs.synth.cover import render_cover, undecodable_cover
from vtag.jobs.synth.labels import LabelMaker
from vtag.jobs.synth.memory import release_memory
from vtag.jobs.synth.text import TextMaker
from vtag.jobs.synth.world import World
from vtag.models.schema import DUMP_SCHEMA, LABELED_SCHEMA, MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS

_BAD_UTF8 = [b"\xff\xfe", b"\xc3\x28", b"\xe4\xb8", b"\x80\x81\x82"]
_MARK = "\ue000"


@dataclass(frozen=True)
class PartSpec:
    day: str  # YYYY-MM-DD
    day_ord: int  # date.toordinal()
    part: int
    n_rows: int
    fmt: str  # parquet | jsonl
    cover_mode: str  # bytes | uri
    labeled: bool
    bad_rate: float
    covers_dir: str | None  # local directory for --cover-mode uri (this day's)


def output_schema(labeled: bool) -> pa.Schema:
    """The Arrow schema of Parquet batches: the dump schema with every field nullable (the dump
    carries bad rows, e.g. a null ``video_id``; Spark writes every Parquet column optional)."""
    base = LABELED_SCHEMA if labeled else DUMP_SCHEMA
    return pa.schema([f.with_nullable(True) for f in base])


JSONL_SCHEMA = pa.schema([pa.field("value", pa.binary())])


class Generator:
    def __init__(self, world: World):
        self.w = world
        self.texts = TextMaker(world)
        self.ctx = ContextMaker(world)
        self.labels = LabelMaker(world)
        c = world.conf["cover"]
        self.cw, self.ch, self.cq = int(c["width"]), int(c["height"]), int(c["quality"])
        self.c_noise, self.c_missing = float(c["noise"]), float(c["missing_rate"])
        self.c_offsig, self.c_text = float(c["offsig_rate"]), float(c["text_rate"])
        self.c_layout = float(c["layout_rate"])
        self.empty_title = float(world.conf["text"]["empty_title_rate"])
        self.chunk_rows = int(world.conf["batch_rows"])
        self.bad_conf = world.conf["bad"]

    # ------------------------------------------------------------------ ids
    @staticmethod
    def video_id(spec: PartSpec, i: int) -> str:
        return f"v{spec.day.replace('-', '')}{spec.part:05d}{i:06d}"

    def part_rows(self, spec: PartSpec) -> Iterator[pa.RecordBatch]:
        w = self.w
        plan = make_plan(w.seed, spec.day_ord, spec.part, spec.n_rows, spec.bad_rate, spec.fmt, self.bad_conf)
        bad = plan.by_row()
        day_start = int(dt.datetime.fromisoformat(spec.day).replace(tzinfo=dt.timezone.utc).timestamp()) * 1_000_000
        schema = output_schema(spec.labeled)
        if spec.covers_dir:
            os.makedirs(spec.covers_dir, exist_ok=True)
        for c0 in range(0, spec.n_rows, self.chunk_rows):
            chunk = c0 // self.chunk_rows
            n = min(self.chunk_rows, spec.n_rows - c0)
            base = [w.seed, spec.day_ord, spec.part, chunk]
            rng = np.random.default_rng(base + [1])
            lrng = np.random.default_rng(base + [2])
            brng = np.random.default_rng(base + [3])
            leaves = self.labels.true_leaves(rng, n)
            cols: dict[str, list] = {f.name: [] for f in schema}
            lines: list[bytes] = []
            for r in range(n):
                i = c0 + r
                row = self._row(spec, rng, lrng, int(leaves[r]), i, day_start)
                kind = bad.get(i)
                if kind:
                    self._make_bad(spec, brng, row, kind, i, plan)
                self._place_cover(spec, row, i)
                if spec.fmt == "jsonl":
                    lines.append(self._json_line(spec, brng, row, kind))
                else:
                    for f in schema.names:
                        cols[f].append(row.get(f))
            if spec.fmt == "jsonl":
                batch = pa.RecordBatch.from_arrays([pa.array(lines, pa.binary())], schema=JSONL_SCHEMA)
            else:
                batch = pa.RecordBatch.from_arrays([pa.array(cols[f.name], f.type) for f in schema], schema=schema)
            del cols, lines
            yield batch
            del batch
            release_memory()

    # ------------------------------------------------------------------ one row
    def _row(self, spec: PartSpec, rng, lrng, k: int, i: int, day_start: int) -> dict:
        w = self.w
        k_lab = self.labels.noisy(lrng, k)
        extras = self.labels.extras(lrng, k_lab)
        extra_names = [w.tax.by_id[e].name for e in extras]
        text = self.texts.make(rng, k, extra_names)
        u = self.ctx.uploader(rng, k)
        row = {
            "video_id": self.video_id(spec, i),
            "title": text.title,
            "description": text.description,
            "cover": None,
            "cover_uri": None,
            "uploader_id": w.uploader_ids[u],
            "source_program": self.ctx.program(rng, k, u),
            "duration_s": self.ctx.duration(rng, k),
            "upload_ts": self.ctx.upload_us(rng, day_start),
        }
        missing = rng.random() < self.c_missing
        if not missing:
            offsig = rng.random() < self.c_offsig
            row["cover"] = render_cover(
                rng, w.sig[w.leaf_ids[k]], text.cover_text, self.cw, self.ch, self.cq, self.c_noise, offsig, self.c_text,
                self.c_layout,
            )
            if text.title and rng.random() < self.empty_title:
                row["title"] = ""
        if spec.labeled:
            row["labels"] = [w.leaf_ids[k_lab]] + extras
        return row

    def _make_bad(self, spec: PartSpec, rng, row: dict, kind: str, i: int, plan) -> None:
        if kind == "null_video_id":
            row["video_id"] = None
        elif kind == "duplicate_video_id":
            row["video_id"] = self.video_id(spec, plan.dup_source[i])
            row["upload_ts"] += 1_000_000  # the copy comes later than the original's day start
        elif kind == "undecodable_cover":
            row["cover"] = undecodable_cover(rng, row["cover"])
        elif kind == "empty_title_no_cover":
            row["title"], row["description"], row["cover"] = "", None, None
        elif kind == "overlong_field":
            base = row["title"] or "标题"
            if i in plan.big:
                row["title"] = big_text(base, int(self.bad_conf["big_title_bytes"]))
            elif rng.random() < 0.5:
                row["title"] = big_text(base, 3 * (MAX_TITLE_CHARS + 1))[: MAX_TITLE_CHARS + 1 + int(rng.integers(500))]
            else:
                row["description"] = big_text(row["description"] or base, 3 * (MAX_DESCRIPTION_CHARS + 1))[
                    : MAX_DESCRIPTION_CHARS + 1 + int(rng.integers(4000))
                ]
        elif kind == "invalid_utf8":
            row["title"] = (row["title"] or "无题") + _MARK
        # wrong_types is applied when the JSON line is written

    def _place_cover(self, spec: PartSpec, row: dict, i: int) -> None:
        if spec.cover_mode != "uri" or row["cover"] is None:
            return
        vid = row["video_id"]
        own = self.video_id(spec, i)
        # a null or duplicated id must not overwrite another row's cover file
        name = own if vid == own else f"{vid or 'null'}__{spec.part:05d}_{i:06d}"
        path = os.path.join(spec.covers_dir, f"{name}.jpg")
        with open(path, "wb") as fh:
            fh.write(row["cover"])
        row["cover_uri"] = "file://" + os.path.abspath(path)
        row["cover"] = None

    def _json_line(self, spec: PartSpec, rng, row: dict, kind: str | None) -> bytes:
        obj = {}
        for f in output_schema(spec.labeled).names:
            v = row.get(f)
            if f == "cover" and v is not None:
                v = base64.b64encode(v).decode("ascii")
            elif f == "upload_ts" and v is not None:
                v = dt.datetime.fromtimestamp(v / 1e6, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            obj[f] = v
        if kind == "wrong_types":
            variants = ["duration_str", "duration_float", "ts_text"] + (["cover_num"] if spec.cover_mode == "bytes" else [])
            v = variants[int(rng.integers(len(variants)))]
            if v == "duration_str":
                obj["duration_s"] = ["abc", "12分钟", "约3分"][int(rng.integers(3))]
            elif v == "duration_float":
                obj["duration_s"] = float(obj["duration_s"] or 30) + 0.5
            elif v == "ts_text":
                obj["upload_ts"] = ["昨天", "2026-13-45 25:61", "刚刚"][int(rng.integers(3))]
            else:
                obj["cover"] = int(rng.integers(1, 10**6))
        line = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if kind == "invalid_utf8":
            line = line.replace(_MARK.encode("utf-8"), _BAD_UTF8[int(rng.integers(len(_BAD_UTF8)))])
        return line
