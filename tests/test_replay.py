"""vtag.models.replay: the labeled rows scored day by day, the way the nightly job meets them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.builders import tiny_config, tiny_frame, tiny_taxonomy, tmp_root
from vtag.models.profiles import LEAF_COL, N_COL, ProfileTable
from vtag.models.replay import UNDATED, replay, replay_days


def _rows(days: list[str | None], uploaders: list[str | None]) -> pd.DataFrame:
    ts = [None if d is None else pd.Timestamp(f"{d} 12:00", tz="UTC") for d in days]
    return pd.DataFrame({
        "video_id": [f"v{i}" for i in range(len(days))],
        "title": ["t"] * len(days),
        "uploader_id": pd.Series(uploaders, dtype=object),
        "upload_ts": pd.Series(ts, dtype="datetime64[ns, UTC]"),
    })


class _Scorer:
    """A stand-in model: every row's primary node is ``node`` with score ``score`` (per video id),
    and each call records the profiles it was handed, by video id."""

    def __init__(self, tax, node: dict[str, str], score: dict[str, float]):
        self.tax, self.node, self.score, self.seen = tax, node, score, {}

    def __call__(self, part: pd.DataFrame):
        prob = np.zeros((len(part), self.tax.n_nodes), np.float32)
        for k, (vid, n, c) in enumerate(zip(part["video_id"], part[N_COL], part[LEAF_COL])):
            self.seen[vid] = (float(n), dict(c))
            leaf = self.tax.index[self.node[vid]]
            for j in self.tax.path(self.node[vid]):
                prob[k, self.tax.index[j]] = self.score[vid]
            prob[k, leaf] = self.score[vid]
        return prob, np.zeros(len(part), bool)


def _decoder(tax):
    from vtag.models.predictor import decoder_for

    return decoder_for(tax, {"decode": {"thresholds": 0.5}})


def test_days_come_from_dt_else_the_upload_date_and_undated_rows_come_last():
    rows = _rows(["2024-05-02", None, "2024-05-01"], ["a", "b", "c"])
    assert replay_days(rows).tolist() == ["2024-05-02", UNDATED, "2024-05-01"]
    with_dt = rows.assign(dt=["2024-06-01", "2024-06-02", None])
    assert replay_days(with_dt).tolist() == ["2024-06-01", "2024-06-02", UNDATED]
    assert sorted(["2024-12-31", UNDATED]) == ["2024-12-31", UNDATED]


def test_a_day_sees_the_confident_tags_of_earlier_days_only():
    tax = tiny_taxonomy()
    rows = _rows(["2024-05-01", "2024-05-01", "2024-05-02", "2024-05-03", "2024-05-03", None],
                 ["new", "new", "new", "new", "other", "new"])
    node = {f"v{i}": "food_bake" for i in range(6)}
    node["v1"] = "game_theme_rpg"
    score = {f"v{i}": 0.9 for i in range(6)}
    score["v2"] = 0.3  # below min_score: scored, but never counted
    scorer = _Scorer(tax, node, score)
    prob, cover, info = replay(rows, None, scorer, _decoder(tax), tax, min_score=0.5, count="one")
    # day 1: nothing before it, not even the other row of the same day
    assert scorer.seen["v0"] == (0.0, {}) and scorer.seen["v1"] == (0.0, {})
    # day 2: both tags of day 1
    assert scorer.seen["v2"] == (2.0, {"food_bake": 1.0, "game_theme_rpg": 1.0})
    # day 3: the unsure tag of day 2 is not counted; another uploader starts empty
    assert scorer.seen["v3"] == (2.0, {"food_bake": 1.0, "game_theme_rpg": 1.0})
    assert scorer.seen["v4"] == (0.0, {})
    # undated rows come after every dated day
    assert scorer.seen["v5"] == (3.0, {"food_bake": 2.0, "game_theme_rpg": 1.0})
    assert prob.shape == (6, tax.n_nodes) and cover.shape == (6,)
    assert prob[1, tax.index["game_theme_rpg"]] == pytest.approx(0.9)  # the frame's row order
    # the rows whose uploader had a counted tag on an earlier day (evaluate's ``tag_history`` group)
    assert info.pop("tag_history").tolist() == [False, False, True, True, False, True]
    assert info == {"days": 4, "rows_with_tag_history": 3, "tags_counted": 5, "videos_counted": 5.0,
                    "min_score": 0.5, "count": "one"}


def test_by_default_a_tag_counts_by_its_score():
    """``count="score"``: a tag adds its score to its node and to ``n_videos`` (an expected count),
    so an unsure tag still counts, but weighs little."""
    tax = tiny_taxonomy()
    rows = _rows(["2024-05-01", "2024-05-01", "2024-05-02", "2024-05-03"], ["up", "up", "up", "up"])
    node = {"v0": "food_bake", "v1": "game_theme_rpg", "v2": "food_bake", "v3": "food_bake"}
    scorer = _Scorer(tax, node, {"v0": 0.9, "v1": 0.25, "v2": 0.5, "v3": 0.9})
    _, _, info = replay(rows, None, scorer, _decoder(tax), tax)
    assert scorer.seen["v2"][0] == pytest.approx(1.15)
    assert scorer.seen["v2"][1] == pytest.approx({"food_bake": 0.9, "game_theme_rpg": 0.25})
    assert scorer.seen["v3"][0] == pytest.approx(1.65)
    assert scorer.seen["v3"][1] == pytest.approx({"food_bake": 1.4, "game_theme_rpg": 0.25})
    assert info["tags_counted"] == 4 and info["videos_counted"] == pytest.approx(2.55)
    assert info["min_score"] == 0.0 and info["count"] == "score"
    # the floor still applies: with min_score 0.3 the 0.25 tag is not counted
    scorer = _Scorer(tax, node, {"v0": 0.9, "v1": 0.25, "v2": 0.5, "v3": 0.9})
    replay(rows, None, scorer, _decoder(tax), tax, min_score=0.3)
    assert scorer.seen["v2"][0] == pytest.approx(0.9) and scorer.seen["v2"][1] == pytest.approx({"food_bake": 0.9})


def test_the_history_starts_from_the_table_and_a_video_counts_once():
    tax = tiny_taxonomy()
    table = ProfileTable(tax.version, {"known": (3.0, {"film_live": 3.0})})
    rows = _rows(["2024-05-01", "2024-05-02", "2024-05-03"], ["known", "known", "known"])
    rows.loc[1, "video_id"] = "v0"  # the same video again on a later day (a re-upload in the dump)
    scorer = _Scorer(tax, {"v0": "food_bake", "v2": "food_bake"}, {"v0": 0.9, "v2": 0.9})
    replay(rows, table, scorer, _decoder(tax), tax, count="one")
    assert scorer.seen["v2"] == (4.0, {"film_live": 3.0, "food_bake": 1.0})
    assert table.profiles["known"] == (3.0, {"film_live": 3.0})  # the table itself is not changed


def test_min_score_outside_zero_one_and_an_unknown_count_are_refused():
    tax = tiny_taxonomy()
    with pytest.raises(ValueError, match="min_score"):
        replay(_rows(["2024-05-01"], ["a"]), None, _Scorer(tax, {"v0": "food_bake"}, {"v0": 0.9}),
               _decoder(tax), tax, min_score=1.5)
    with pytest.raises(ValueError, match="count"):
        replay(_rows(["2024-05-01"], ["a"]), None, _Scorer(tax, {"v0": "food_bake"}, {"v0": 0.9}),
               _decoder(tax), tax, count="votes")


def test_evaluate_replay_on_a_bundle_with_the_evidence_mix(capsys):
    """A bundle trained with ``context.profile.evidence_mix`` records the chosen weight, and
    ``vtag evaluate --replay`` scores the rows day by day (labels dropped before scoring)."""
    from vtag.models.data import write_dump
    from vtag.models.evaluate import _arg_parser, main
    from vtag.models.predictor import Predictor
    from vtag.models.replay import replay_scores
    from vtag.models.training import train

    tax, frame = tiny_taxonomy(), tiny_frame()
    cfg = tiny_config(epochs=1)
    cfg["modalities"] = ["text", "context"]
    cfg["context"]["profile"] = {"enabled": True, "evidence_mix": True}
    cfg["head"]["wide"] = True
    root = tmp_root()
    res = train(cfg, tax, frame, root / "bundle", seed=0, progress=False)
    info = res.metrics["profile_evidence"]
    assert info["scale"] in (float(k) for k in info["validation"])
    pred = Predictor.load(root / "bundle", device="cpu")
    test = tiny_frame(24, seed=5)
    decoded, _, stats = replay_scores(pred, test.drop(columns=["labels"]))
    assert len(decoded) == len(test) and stats["days"] == len(set(test["upload_ts"].dt.date))
    days = sorted({str(d) for d in test["upload_ts"].dt.date})
    for d in days:
        part = test[test["upload_ts"].dt.date.astype(str) == d]
        write_dump(part, root / "dump", d)
    import json

    def evaluate(*flags: str) -> dict:
        rc = main(_arg_parser().parse_args(["--bundle", str(root / "bundle"), "--data", str(root / "dump"),
                                            "--json", *flags]))
        assert rc == 0
        return json.loads(capsys.readouterr().out)

    report = evaluate("--replay", "--min-score", "0.2")
    assert report["replay_min_score"] == 0.2 and report["rows"] == len(test)
    assert report["replay"]["days"] == len(days) and report["replay"]["min_score"] == 0.2
    assert set(report["overall"]) >= {"leaf_acc", "hf1"}
    assert report["replay_count"] == "score" and report["replay"]["count"] == "score"
    default = evaluate()  # the default for a bundle with profiles: the shipped job conf's settings
    assert default["replay_min_score"] == 0.0 and default["replay_count"] == "score"
    assert evaluate("--count", "one")["replay"]["count"] == "one"
    assert main(_arg_parser().parse_args(["--bundle", str(root / "bundle"), "--data", str(root / "dump")])) == 0
    assert "scored day by day as the nightly job meets the rows" in capsys.readouterr().out
    static = evaluate("--no-replay")
    assert static["replay_min_score"] is None and static["replay"] is None and static["replay_count"] is None
    # the rows by what the model knew of their uploader: the bundle's profiles hold its training uploaders
    trained = set(pred.featurizer.profiles.profiles)
    assert trained and trained <= {str(u) for u in frame["uploader_id"].dropna()}
    ups = test["uploader_id"]
    expected = {"returning": int(ups.isin(trained).sum()), "no_uploader": int(ups.isna().sum())}
    expected["new"] = len(test) - sum(expected.values())
    groups = static["uploaders"]["groups"]
    assert {g: m["rows"] for g, m in groups.items()} == {g: n for g, n in expected.items() if n}
    assert sum(m["share"] for m in groups.values()) == pytest.approx(1.0, abs=1e-3)
    assert set(static["uploaders"]["legend"]) == set(groups)
    replayed = report["uploaders"]["groups"]  # a replay moves only untrained uploaders into tag_history
    assert replayed["returning"]["rows"] == expected["returning"]
    assert sum(m["rows"] for m in replayed.values()) == len(test)
    main(_arg_parser().parse_args(["--bundle", str(root / "bundle"), "--data", str(root / "dump"), "--no-replay"]))
    printed = capsys.readouterr().out
    assert "by what the model knew of the uploader" in printed and "per day" not in printed
    # per day (the dt partitions): every scored row once, each day's share of returning uploaders
    assert list(static["days"]) == days and sum(d["n"] for d in static["days"].values()) == len(test)
    for day, m in static["days"].items():
        rows = test[test["upload_ts"].dt.date.astype(str) == day]
        assert m["n"] == len(rows) and m["returning"] == pytest.approx(rows["uploader_id"].isin(trained).mean(), abs=1e-4)
        assert 0.0 <= m["leaf_acc"] <= 1.0
    main(_arg_parser().parse_args(["--bundle", str(root / "bundle"), "--data", str(root / "dump"), "--by-day"]))
    assert "per day (dt, else the upload date)" in capsys.readouterr().out


def test_replay_needs_a_bundle_with_profiles():
    from tests.builders import tiny_bundle
    from vtag.models.predictor import Predictor
    from vtag.models.replay import replay_scores

    out, tax, frame, _ = tiny_bundle()
    with pytest.raises(ValueError, match="uploader-profile input"):
        replay_scores(Predictor.load(out, device="cpu"), frame)


REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VTAG_SHARED_DATA", REPO.parent / "shared" / "data"))
VIDEOS = SHARED / "zh_titles" / "bilibili_popular_2023" / "videos.jsonl"


@pytest.mark.slow
@pytest.mark.skipif(not VIDEOS.is_file(), reason="shared Bilibili data not present")
def test_replay_on_real_titles_changes_only_the_rows_with_a_tag_history(tmp_path):
    """Real Bilibili titles, split by uploader (every test uploader new): a replayed row whose
    uploader has no earlier tagged video scores exactly as plain evaluation scores it; the rows that
    have one (the later videos of the test uploaders) get their history, and scores move."""
    sys.path.insert(0, str(REPO / "bench"))
    import bilibili

    from vtag.hierarchy.taxonomy import Taxonomy
    from vtag.models.data import grouped_split
    from vtag.models.predictor import Predictor
    from vtag.models.replay import replay_scores
    from vtag.models.training import load_model_config, train

    tax = Taxonomy.load(REPO / "conf" / "taxonomy" / "bilibili-v1.yaml")
    with open(VIDEOS, encoding="utf-8") as fh:
        lines = [next(fh) for _ in range(1500)]
    (tmp_path / "v.jsonl").write_text("".join(lines), encoding="utf-8")
    frame, _ = bilibili.read_videos(tmp_path / "v.jsonl", tax)
    tr, te = grouped_split(frame, 0.3, 0)
    train_df, test = frame.iloc[tr].reset_index(drop=True), frame.iloc[te].reset_index(drop=True)
    cfg = load_model_config(REPO / "conf" / "model" / "text-context.yaml")
    res = train(cfg, tax, train_df, tmp_path / "bundle", seed=0, epochs=1, progress=False)
    assert "profile_evidence" in res.metrics
    # the validation rows (the training side's latest days) as shipped: profiles replayed day by day
    shipped = res.metrics["shipped"]
    assert shipped["replayed"] is True and 0.0 < shipped["leaf_acc"] <= 1.0
    # ... and per uploader group: the rows add up, and the groups average to the whole
    groups = shipped["uploaders"]
    assert sum(g["rows"] for g in groups.values()) == shipped["n"]
    assert sum(g["rows"] * g["leaf_acc"] for g in groups.values()) / shipped["n"] == pytest.approx(shipped["leaf_acc"])
    pred = Predictor.load(tmp_path / "bundle", device="cpu")
    rows = test.drop(columns=["labels"])
    static, _ = pred.predict_scores(rows)

    days = replay_days(rows)
    first_day = rows.assign(day=days).groupby("uploader_id")["day"].transform("min").to_numpy()
    replayed, _, info = replay_scores(pred, rows, min_score=0.0)  # min 0: every earlier video counts
    seen_before = days > first_day  # its uploader had a (tagged) video on an earlier day
    assert info["rows_with_tag_history"] == int(seen_before.sum()) > 20
    np.testing.assert_allclose(replayed.consistent[~seen_before], static.consistent[~seen_before], atol=1e-5)
    assert not np.allclose(replayed.consistent[seen_before], static.consistent[seen_before], atol=1e-3)

    # vtag evaluate's uploader groups on the same rows: no test uploader was trained on; the
    # replayed ones with an earlier tagged video are the tag_history group, and score apart
    from vtag.models.evaluate import evaluate_frame

    report = evaluate_frame(pred, test, replay=0.0)
    groups = report["uploaders"]["groups"]
    assert "returning" not in groups and "tag_history" not in report["replay"]
    assert groups["tag_history"]["rows"] == int(seen_before.sum())
    assert groups["new"]["rows"] + groups.get("no_uploader", {}).get("rows", 0) == len(test) - int(seen_before.sum())
    static_report = evaluate_frame(pred, test)
    assert set(static_report["uploaders"]["groups"]) <= {"new", "no_uploader"}
