"""`vtag generate`: schema contract, determinism, bad rows vs manifest, label constraints, read-back."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vtag.models.schema import DUMP_SCHEMA, LABELED_SCHEMA, MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS

REPO_ROOT = Path(__file__).resolve().parents[1]
DESIGN = REPO_ROOT.parent / "shared" / "DESIGN.md"

# DESIGN.md's input table, as written there (cover_uri is the "or `cover_uri` (string)" of the cover row)
EXPECTED = [
    ("video_id", "string"), ("title", "string"), ("description", "string"), ("cover", "binary"),
    ("cover_uri", "string"), ("uploader_id", "string"), ("source_program", "string"), ("duration_s", "int"),
    ("upload_ts", "timestamp"),
]
DESIGN_TO_ARROW = {"string": "string", "binary": "binary", "int": "int32", "timestamp": "timestamp[us, tz=UTC]"}
DESIGN_TO_SPARK = {"string": "string", "binary": "binary", "int": "int", "timestamp": "timestamp"}
SMALL = {"context.uploaders": 400, "rows_per_partition": 100, "batch_rows": 50}


def _design_table() -> list[tuple[str, str]]:
    text = DESIGN.read_text(encoding="utf-8")
    section = text.split("## Input: a daily dump", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        m = re.match(r"\|\s*`(\w+)`\s*\|\s*(\w+)\s*\|(.*)\|", line)
        if m:
            rows.append((m.group(1), m.group(2)))
            alt = re.search(r"`(\w+)` \((\w+)\)", m.group(3))
            if alt:
                rows.append((alt.group(1), alt.group(2)))
    return rows


# ---------------------------------------------------------------------------------------- no Spark
def test_schema_matches_design_exactly():
    if DESIGN.is_file():
        assert _design_table() == EXPECTED
    assert [(f.name, str(f.type)) for f in DUMP_SCHEMA] == [(n, DESIGN_TO_ARROW[t]) for n, t in EXPECTED]
    assert LABELED_SCHEMA.names == DUMP_SCHEMA.names + ["labels"]
    assert str(LABELED_SCHEMA.field("labels").type) == "list<item: string>"


def test_generated_batches_follow_schema_and_are_deterministic(tiny_taxonomy_path):
    from vtag.jobs.synth.config import load_config
    from vtag.jobs.synth.rows import Generator, PartSpec, output_schema
    from vtag.jobs.synth.world import get_world

    conf = load_config(overrides=SMALL)
    text = tiny_taxonomy_path.read_text(encoding="utf-8")
    spec = PartSpec("2026-11-20", 739575, 3, 120, "parquet", "bytes", True, 0.05, None)
    a = list(Generator(get_world(text, conf, 11)).part_rows(spec))
    b = list(Generator(get_world(text, conf, 11)).part_rows(spec))
    assert all(x.schema.equals(output_schema(True)) for x in a)
    assert [x.to_pydict() for x in a] == [x.to_pydict() for x in b]
    c = list(Generator(get_world(text, conf, 12)).part_rows(spec))
    assert [x.to_pydict()["title"] for x in a] != [x.to_pydict()["title"] for x in c]
    # --labeled changes nothing but the labels column
    spec_u = PartSpec("2026-11-20", 739575, 3, 120, "parquet", "bytes", False, 0.05, None)
    u = list(Generator(get_world(text, conf, 11)).part_rows(spec_u))
    for x, y in zip(a, u):
        dx, dy = x.to_pydict(), y.to_pydict()
        dx.pop("labels")
        assert dx == dy


def test_covers_are_jpegs_with_a_subtree_signature(tiny_taxonomy_path):
    from PIL import Image

    from vtag.jobs.synth.config import load_config
    from vtag.jobs.synth.cover import font_path, render_cover, undecodable_cover
    from vtag.jobs.synth.world import get_world

    w = get_world(tiny_taxonomy_path.read_text(encoding="utf-8"), load_config(overrides=SMALL), 7)
    assert font_path() is not None, "the CJK font of pylopdf-fonts-zh-cn should be installed"
    sig = w.sig["food_bake"]
    one = render_cover(np.random.default_rng(1), sig, "烘焙", 160, 120, 80, 8.0, False, 1.0)
    two = render_cover(np.random.default_rng(1), sig, "烘焙", 160, 120, 80, 8.0, False, 1.0)
    assert one == two and one[:2] == b"\xff\xd8"
    img = Image.open(io.BytesIO(one))
    assert img.size == (160, 120) and img.format == "JPEG"
    # different level-1 subtrees get different palettes
    assert w.sig["food_bake"].bg1 != w.sig["game_theme_rpg"].bg1
    from PIL import UnidentifiedImageError

    for seed in range(6):
        bad = undecodable_cover(np.random.default_rng(seed), one)
        with pytest.raises((UnidentifiedImageError, OSError, SyntaxError)):
            Image.open(io.BytesIO(bad)).load()


def _check_labels(tax, labels: list[str]) -> None:
    idx = [tax.index[x] for x in labels]
    assert tax.is_leaf[idx[0]], f"labels[0] {labels[0]} is not a leaf"
    implied = tax.closure_matrix[idx].any(axis=0)
    both = np.flatnonzero(implied)
    assert not tax.exclusive_matrix[np.ix_(both, both)].any(), f"exclusive broken by {labels}"
    listed_closed = tax.close_ancestors(np.eye(tax.n_nodes, dtype=bool)[idx]).any(axis=0)
    for a in labels:
        for b in tax.constraints.requires.get(a, ()):
            assert listed_closed[tax.index[b]], f"{a} requires {b}, missing in {labels}"
    assert len(set(labels)) == len(labels)


def test_labels_never_break_constraints(tiny_taxonomy, tiny_taxonomy_path):
    from vtag.jobs.synth.config import load_config
    from vtag.jobs.synth.labels import LabelMaker
    from vtag.jobs.synth.world import get_world

    conf = load_config(overrides={**SMALL, "labels.cooccur_scale": 1.0, "labels.noise_rate": 0.3})
    w = get_world(tiny_taxonomy_path.read_text(encoding="utf-8"), conf, 3)
    lm = LabelMaker(w)
    rng = np.random.default_rng(0)
    seen_extra = Counter()
    for k in lm.true_leaves(rng, 3000):
        kk = lm.noisy(rng, int(k))
        labels = [w.leaf_ids[kk]] + lm.extras(rng, kk)
        _check_labels(tiny_taxonomy, labels)
        seen_extra.update(labels[1:])
    # requires and cooccur both produce extras
    assert seen_extra["game_theme_moba"] > 0 and seen_extra["film_live"] > 0


def test_text_blind_siblings_never_name_their_leaf(tiny_taxonomy_path):
    from vtag.jobs.synth.config import load_config
    from vtag.jobs.synth.rows import Generator, PartSpec
    from vtag.jobs.synth.world import get_world

    conf = load_config(overrides={**SMALL, "sets.text_blind_rate": 1.0, "sets.cover_blind_rate": 0.0,
                                  "text.zone_title_rate": 0.0, "text.generic_title_rate": 0.0,
                                  "labels.noise_rate": 0.0, "text.extra_tag_mention_rate": 0.0})
    w = get_world(tiny_taxonomy_path.read_text(encoding="utf-8"), conf, 5)
    sets = w.sibling_sets()["text_blind"]
    assert "food" in sets and sets["food"] == ["food_home", "food_bake"]
    spec = PartSpec("2026-11-20", 739575, 0, 400, "parquet", "bytes", True, 0.0, None)
    rows = [r for b in Generator(w).part_rows(spec) for r in b.to_pylist()]
    names = {"food_home": "家常菜", "food_bake": "烘焙"}
    n = 0
    for r in rows:
        leaf = r["labels"][0]
        if leaf in names:
            n += 1
            assert names[leaf] not in (r["title"] or "") + (r["description"] or "")
    assert n > 10


def test_lexicon_without_shared_data(tiny_taxonomy, tmp_path):
    from vtag.jobs.synth.lexicon import build_lexicon
    from vtag.jobs.synth.shared import load_seeds

    seeds = load_seeds(tmp_path / "absent")
    assert not seeds.found
    lex = build_lexicon(tiny_taxonomy, seeds)
    assert lex.words["game_ip_wzry"][0] == "王者荣耀" and "农药" in lex.words["game_ip_wzry"]
    assert set(lex.ip_shared) == {"漫威", "蜘蛛侠"}  # same Chinese name in game and film
    assert lex.ip_shared["蜘蛛侠"] == ["film_ip_spiderman", "game_ip_spiderman"]
    assert lex.generic_titles == [] and lex.stats["seeded"] is False


def test_unknown_knob_is_an_error():
    from vtag.jobs.synth.config import GenerateConfigError, load_config

    with pytest.raises(GenerateConfigError, match="unknown knob"):
        load_config(overrides=["cover.nope=1"])
    assert load_config(overrides=["cover.width=224"])["cover"]["width"] == 224


# ---------------------------------------------------------------------------------------- Spark
@pytest.fixture(scope="module")
def dumps(spark, tiny_taxonomy_path, tmp_path_factory):
    from vtag.jobs import progress
    from vtag.jobs.synth.generate import generate

    root = tmp_path_factory.mktemp("gen")
    kw = dict(labeled=True, bad_rate=0.08, seed=7, overrides=SMALL)
    out = {}
    out["pq"] = (root / "pq", generate(spark, tiny_taxonomy_path, root / "pq", "2026-11-20", 2, 200, **kw))
    log = io.StringIO()  # #19 item 4: the progress of one run, off a terminal
    with progress.command("vtag generate", stream=log):
        out["pq2"] = (root / "pq2", generate(spark, tiny_taxonomy_path, root / "pq2", "2026-11-20", 1, 200, **kw))
    out["progress"] = log.getvalue()
    out["js"] = (root / "js", generate(spark, tiny_taxonomy_path, root / "js", "2026-11-20", 1, 200, fmt="jsonl",
                                       cover_mode="uri", **kw))
    return out


def _count_bad(df, cover_bytes) -> dict[str, int]:
    """Recount each bad kind from the rows themselves (pandas frame of one day)."""
    from PIL import Image

    def undecodable(b):
        if b is None:
            return False
        try:
            Image.open(io.BytesIO(b)).load()
            return False
        except Exception:
            return True

    ids = df["video_id"].dropna()
    covers = df["cover"] if cover_bytes is None else cover_bytes
    no_cover = covers.isna()
    return {
        "null_video_id": int(df["video_id"].isna().sum()),
        "duplicate_video_id": int(len(ids) - ids.nunique()),
        "undecodable_cover": int(covers.map(undecodable).sum()),
        "empty_title_no_cover": int(((df["title"] == "") & no_cover & df["description"].isna()).sum()),
        "overlong_field": int(((df["title"].str.len() > MAX_TITLE_CHARS)
                               | (df["description"].fillna("").str.len() > MAX_DESCRIPTION_CHARS)).sum()),
    }


@pytest.mark.spark
def test_parquet_dump_reads_back_and_matches_manifest(spark, dumps, tiny_taxonomy):
    from vtag.jobs.spark.schema import to_spark

    root, manifests = dumps["pq"]
    assert [m["dt"] for m in manifests] == ["2026-11-20", "2026-11-21"]
    for m in manifests:
        day = root / f"dt={m['dt']}"
        assert (day / "_SUCCESS").is_file()
        on_disk = json.loads((day / "_manifest.json").read_text(encoding="utf-8"))
        assert on_disk == m
        assert (day / "_SUCCESS").stat().st_mtime_ns >= (day / "_manifest.json").stat().st_mtime_ns
        df = spark.read.parquet(str(day))
        expected = to_spark(LABELED_SCHEMA)
        assert [(f.name, f.dataType) for f in df.schema] == [(f.name, f.dataType) for f in expected]
        pdf = df.toPandas()
        assert len(pdf) == m["rows"] == 200
        assert m["bad_rows"] > 0 and set(m["bad_by_kind"]) == {
            "null_video_id", "duplicate_video_id", "undecodable_cover", "empty_title_no_cover", "overlong_field"}
        assert _count_bad(pdf, None) == m["bad_by_kind"]
        assert m["taxonomy_version"] == tiny_taxonomy.version and m["seed"] == 7
        for labels in pdf["labels"]:
            _check_labels(tiny_taxonomy, list(labels))
        assert pdf["cover_uri"].isna().all()


@pytest.mark.spark
def test_determinism_same_bytes(dumps):
    (a, ma), (b, mb) = dumps["pq"], dumps["pq2"]
    assert ma[0] == mb[0]

    def parts(d):
        files = sorted((d / "dt=2026-11-20").glob("part-*.parquet"), key=lambda p: p.name.split("-")[1])
        return [p.read_bytes() for p in files]

    pa_, pb = parts(a), parts(b)
    assert len(pa_) == 2 and pa_ == pb


@pytest.mark.spark
def test_jsonl_dump_reads_back_with_corrupt_records(spark, dumps):
    from pyspark.sql import types as T

    from vtag.jobs.spark.schema import to_spark

    root, (m,) = dumps["js"]
    day = root / f"dt={m['dt']}"
    schema = T.StructType(to_spark(LABELED_SCHEMA).fields + [T.StructField("_corrupt_record", T.StringType())])
    df = (spark.read.schema(schema).option("mode", "PERMISSIVE")
          .option("columnNameOfCorruptRecord", "_corrupt_record").json(str(day)))
    pdf = df.toPandas()
    assert len(pdf) == m["rows"] == 200
    corrupt = pdf["_corrupt_record"].notna()
    kinds = m["bad_by_kind"]
    assert int(corrupt.sum()) == kinds["invalid_utf8"] + kinds["wrong_types"] > 0
    good = pdf[~corrupt]
    assert good["cover"].isna().all() and good["cover_uri"].notna().sum() > 0

    def read_uri(u):
        return None if u is None or (isinstance(u, float)) else Path(u.removeprefix("file://")).read_bytes()

    counted = _count_bad(good, good["cover_uri"].map(read_uri))
    assert counted == {k: v for k, v in kinds.items() if k not in ("invalid_utf8", "wrong_types")}
    assert all(Path(u.removeprefix("file://")).is_file() for u in good["cover_uri"].dropna())
    assert (root / "covers" / f"dt={m['dt']}").is_dir()


@pytest.mark.spark
def test_generate_reports_one_log_line_per_stage(dumps):
    lines = dumps["progress"].splitlines()
    assert [ln.split("] ", 1)[1] for ln in lines] == [
        "day 1/1: 2026-11-20: generating and writing 2 partition(s): 200 rows",
        "day 1/1: 2026-11-20: written; manifest and _SUCCESS",
    ], lines
    assert all(ln.startswith("vtag generate: [") for ln in lines)
