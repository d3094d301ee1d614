"""``vtag promote`` (jobs/cli/promote.py): the decision, the one-rename switch of the bundle link,
the log and the rollback, and the refusals, on real Bilibili titles."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from vtag.jobs.cli import main as vtag
from vtag.jobs.cli.promote import (
    REJECTED,
    append_history,
    current_target,
    decide,
    kept_bundles,
    point,
    prune,
    read_history,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VTAG_SHARED_DATA", REPO.parent / "shared" / "data"))
VIDEOS = SHARED / "zh_titles" / "bilibili_popular_2023" / "videos.jsonl"
HOLDOUT = "2023-09-02..2023-09-07"


def test_decide_needs_every_metric_to_gain_at_least_min_gain():
    cand, cur = {"leaf_acc": 0.70, "hf1": 0.74}, {"leaf_acc": 0.69, "hf1": 0.75}
    v = decide(cand, cur, ["leaf_acc", "hf1"], 0.0)
    assert v["promote"] is False and v["gains"] == pytest.approx({"leaf_acc": 0.01, "hf1": -0.01})
    assert len(v["failed"]) == 1 and v["failed"][0].startswith("hf1: 0.7400 against 0.7500")
    assert decide(cand, cur, ["leaf_acc", "hf1"], -0.02)["promote"] is True  # a tolerated loss
    assert decide(cand, cur, ["leaf_acc"], 0.011)["promote"] is False
    assert decide(cand, None, ["leaf_acc"], 0.5) == {"promote": True, "gains": {}, "failed": []}  # no bundle yet
    with pytest.raises(SystemExit, match="no metric"):
        decide(cand, cur, ["auprc"], 0.0)


def test_point_swaps_the_link_and_a_real_directory_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    link = tmp_path / "prod"
    assert current_target(link) is None
    point(link, a)
    assert link.is_symlink() and current_target(link) == a.resolve()
    point(link, b)
    assert current_target(link) == b.resolve() and sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "prod"]
    with pytest.raises(SystemExit, match="not a symbolic link"):
        current_target(a)
    with pytest.raises(SystemExit, match="no link at"):
        vtag(["promote", "--rollback", "--link", str(tmp_path / "nothing")])
    with pytest.raises(SystemExit, match="no promotion to"):  # a link made by hand: nothing logged to undo
        vtag(["promote", "--rollback", "--link", str(link)])


@pytest.fixture(scope="module")
def bilibili(tmp_path_factory):
    """The first 4,000 rows of the shared Bilibili file as a labeled dump (2023-08-19 .. 09-07) and two
    text-context bundles of one epoch: ``old`` trained up to 08-24, ``new`` up to 09-01."""
    if not VIDEOS.is_file():
        pytest.skip("shared Bilibili data not present")
    sys.path.insert(0, str(REPO / "bench"))
    import public_titles

    root = tmp_path_factory.mktemp("promote")
    dump, tax, _, _ = public_titles.write_bilibili(VIDEOS, root / "out", limit=4000)
    bundles = {}
    for name, dates in (("old", "..2023-08-24"), ("new", "..2023-09-01")):
        bundles[name] = root / "bundles" / name
        rc = vtag(["train", "--config", str(REPO / "conf/model/text-context.yaml"), "--data", str(dump),
                   "--taxonomy", str(tax), "--dates", dates, "--epochs", "1", "--seed", "0", "--threads", "1",
                   "--out", str(bundles[name]), "--no-progress"])
        assert rc == 0
    return {"dump": str(dump), "taxonomy": str(tax), "link": root / "bundles" / "prod", **bundles}


def _promote(w, candidate, *extra):
    return vtag(["promote", "--link", str(w["link"]), "--candidate", str(candidate), "--data", w["dump"],
                 "--dates", HOLDOUT, "--taxonomy", w["taxonomy"], "--threads", "1", "--json", *extra])


@pytest.mark.slow
def test_promote_compares_on_held_out_days_switches_logs_and_rolls_back(bilibili, capsys):
    w = bilibili
    link = w["link"]
    # no link yet: the first bundle is promoted as it is
    assert _promote(w, w["old"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["decision"] == "promoted" and first["from"] is None and current_target(link) == w["old"].resolve()
    assert first["rows"] > 1000 and 0 < first["metrics"]["candidate"]["leaf_acc"] < 1

    # a dry run scores both and decides, but neither switches nor logs
    assert _promote(w, w["new"], "--dry-run", "--min-gain", "-1") == 0
    dry = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert dry["decision"] == "promoted (dry run)" and current_target(link) == w["old"].resolve()
    assert len(read_history(link)) == 1

    # the gains are measured on the same rows; a bar no model can clear rejects (exit 3), the link stays
    assert _promote(w, w["new"], "--min-gain", "1") == REJECTED
    rejected = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cand, cur = rejected["metrics"]["candidate"], rejected["metrics"]["current"]
    assert cand["n"] == cur["n"] == first["metrics"]["candidate"]["n"]
    assert rejected["gains"]["leaf_acc"] == pytest.approx(cand["leaf_acc"] - cur["leaf_acc"])
    assert cur["leaf_acc"] == pytest.approx(first["metrics"]["candidate"]["leaf_acc"])
    assert rejected["decision"] == "rejected" and len(rejected["failed"]) == 2
    assert rejected["seen_rows"]["candidate"] < 5 and rejected["seen_rows"]["current"] < 5  # held-out days
    assert current_target(link) == w["old"].resolve()
    # both bundles per uploader group: the later bundle knows more of the held-out days' uploaders
    groups = rejected["uploaders"]
    assert sum(g["rows"] for g in groups["candidate"].values()) == cand["n"]
    assert groups["candidate"]["returning"]["rows"] > groups["current"]["returning"]["rows"] > 0
    assert set(groups["candidate"]["new"]) == {"rows", "leaf_acc", "hf1"}
    vtag(["promote", "--link", str(link), "--candidate", str(w["new"]), "--data", w["dump"], "--dates", HOLDOUT,
          "--taxonomy", w["taxonomy"], "--threads", "1", "--dry-run", "--min-gain", "1"])
    printed = capsys.readouterr().out
    assert "  returning (" in printed and " rows): leaf_acc 0." in printed and " -> 0." in printed

    # promoted at the default bar when it is not worse, else rejected: the decision follows the metrics
    rc = _promote(w, w["new"])
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["promote"] == all(g >= 0 for g in record["gains"].values())
    assert rc == (0 if record["promote"] else REJECTED)
    if not record["promote"]:
        assert _promote(w, w["new"], "--min-gain", "-1") == 0
        capsys.readouterr()
    assert current_target(link) == w["new"].resolve()

    # rollback goes back one promotion at a time, and not past the first
    assert vtag(["promote", "--rollback", "--link", str(link)]) == 0
    assert current_target(link) == w["old"].resolve()
    with pytest.raises(SystemExit, match="the first"):
        vtag(["promote", "--rollback", "--link", str(link)])
    decisions = [e["decision"] for e in read_history(link)]
    assert decisions[0] == "promoted" and decisions[-1] == "rolled back" and "rejected" in decisions


@pytest.mark.slow
def test_promote_refuses_a_candidate_that_saw_the_days_or_has_another_taxonomy(bilibili, tmp_path):
    from tests.builders import tiny_bundle

    w = {**bilibili, "link": tmp_path / "prod"}
    point(w["link"], bilibili["old"])
    with pytest.raises(SystemExit, match="cannot be compared on these days"):
        vtag(["promote", "--link", str(w["link"]), "--candidate", str(w["new"]), "--data", w["dump"],
              "--dates", "2023-08-28..2023-09-07", "--threads", "1"])
    tiny, _, _, _ = tiny_bundle()
    with pytest.raises(SystemExit, match="vtag retag"):
        vtag(["promote", "--link", str(w["link"]), "--candidate", str(tiny), "--data", w["dump"],
              "--dates", HOLDOUT, "--threads", "1"])
    with pytest.raises(SystemExit, match="already points at"):
        _promote(w, w["old"])
    assert current_target(w["link"]) == bilibili["old"].resolve() and read_history(w["link"]) == []


def _bundles(tmp_path, names):
    """Copies of the tiny test bundle, one folder per name (real bundles: ``prune`` reads their meta)."""
    import shutil

    from tests.builders import tiny_bundle

    tiny, _, _, _ = tiny_bundle()
    folders = {}
    for name in names:
        folders[name] = tmp_path / f"prod-{name}"
        shutil.copytree(tiny, folders[name])
    return folders


def _log_promotion(link, frm, to, decision="promoted"):
    append_history(link, {"at": "2026-12-07T00:00:00+00:00", "link": str(link), "decision": decision,
                          "from": str(frm) if frm else None, "to": str(to if decision == "promoted" else frm),
                          "candidate": str(to), "promote": decision == "promoted"})
    if decision == "promoted":
        point(link, to)


def test_keep_deletes_the_logged_bundles_beyond_the_rollback_chain(tmp_path, capsys):
    b = _bundles(tmp_path, ["w1", "w2", "w3", "w4", "w5"])
    link = tmp_path / "prod"
    _log_promotion(link, None, b["w1"])
    _log_promotion(link, b["w1"], b["w2"])
    _log_promotion(link, b["w2"], b["w3"])
    _log_promotion(link, b["w3"], b["w4"], decision="rejected")  # w4 rejected: the link stays at w3
    (tmp_path / "by-hand").mkdir()  # beside them but never logged: not ours
    assert kept_bundles(link, read_history(link), 2) == [b["w3"].resolve(), b["w2"].resolve(), b["w4"].resolve()]

    # a dry run lists and deletes nothing, logs nothing
    assert vtag(["promote", "--link", str(link), "--keep", "2", "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert dry["removed"] == [str(b["w1"])] and b["w1"].is_dir() and len(read_history(link)) == 4

    # keep 2: the current bundle, the one it replaced (a rollback, and a tag run in flight), the latest
    # candidate (rejected, kept for a look); w1 goes, and the log says so
    assert vtag(["promote", "--link", str(link), "--keep", "2", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["removed"] == [str(b["w1"])] and not b["w1"].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "by-hand", "prod", "prod-w2", "prod-w3", "prod-w4", "prod-w5", "prod.promotions.jsonl"]
    assert read_history(link)[-1]["decision"] == "pruned"

    # w5 promoted over w3; the rejected w4 is no longer the latest candidate, and w2 is past keep 2
    _log_promotion(link, b["w3"], b["w5"])
    assert prune(link, 2)["removed"] == [str(b["w2"]), str(b["w4"])]
    # a rollback to w3: w5 stays (a run that began before the rollback may read it), nothing goes
    assert vtag(["promote", "--rollback", "--link", str(link), "--keep", "1"]) == 0
    assert current_target(link) == b["w3"].resolve() and b["w5"].is_dir()
    capsys.readouterr()
    # the bundle before w3 is gone: a second rollback is refused with the reason
    with pytest.raises(SystemExit, match="missing"):
        vtag(["promote", "--rollback", "--link", str(link)])
    assert current_target(link) == b["w3"].resolve()
    with pytest.raises(SystemExit, match="at least 1"):
        prune(link, 0)
    with pytest.raises(SystemExit, match="no link at"):
        vtag(["promote", "--link", str(tmp_path / "nothing"), "--keep", "2"])


def test_keep_never_deletes_what_is_not_a_bundle_or_a_link(tmp_path):
    b = _bundles(tmp_path, ["a", "b", "c"])
    link = tmp_path / "prod"
    stray = tmp_path / "prod-stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("not a bundle")
    alias = tmp_path / "prod-alias"
    alias.symlink_to(b["a"])
    _log_promotion(link, None, b["a"])
    _log_promotion(link, b["a"], stray, decision="rejected")  # a logged path that is no bundle
    _log_promotion(link, b["a"], alias, decision="rejected")  # and one that is a link
    _log_promotion(link, b["a"], b["b"])
    _log_promotion(link, b["b"], b["c"])
    record = prune(link, 1)
    assert record["removed"] == [str(b["a"])] and not b["a"].exists()
    assert stray.is_dir() and alias.is_symlink() and b["b"].is_dir() and b["c"].is_dir()
