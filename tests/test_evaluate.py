"""``vtag evaluate``: metrics overall and per level-1 subtree, printed and saved."""

from __future__ import annotations

import json

import numpy as np

from tests.builders import tiny_bundle, tmp_root
from vtag.models.data import write_dump
from vtag.models.evaluate import true_labels


def test_true_labels_are_ancestor_closed():
    _, tax, frame, _ = tiny_bundle()
    labels, leaf = true_labels(tax, frame)
    assert labels.shape == (len(frame), tax.n_nodes)
    assert (tax.close_ancestors(labels) == labels).all()
    assert (leaf >= 0).all() and labels[np.arange(len(frame)), leaf].all()


def test_vtag_evaluate_prints_and_saves_metrics(capsys):
    from vtag.jobs.cli import main as vtag

    out, tax, frame, _ = tiny_bundle()
    root = tmp_root()
    write_dump(frame, root / "dump", "2024-05-03")
    report_file = root / "eval.json"
    rc = vtag(["evaluate", "--bundle", str(out), "--data", str(root / "dump"), "--out", str(report_file),
               "--json", "--threads", "1", "--taxonomy", str(tax.source)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(report_file.read_text())
    assert printed == saved
    ov = saved["overall"]
    for key in ("leaf_acc", "level1_acc", "level2_acc", "hp", "hr", "hf1", "auprc", "violations", "n"):
        assert key in ov, key
    assert ov["n"] == len(frame) and ov["violations"] == 0
    tops = {nd.id for nd in tax.nodes if nd.parent is None}
    assert set(saved["subtrees"]) <= tops and saved["subtrees"]
    assert sum(m["n"] for m in saved["subtrees"].values()) == len(frame)
    assert saved["model_version"] and saved["taxonomy_version"] == tax.version
    # the table form prints too
    rc = vtag(["evaluate", "--bundle", str(out), "--data", str(root / "dump"), "--out", str(root / "e2.json")])
    assert rc == 0 and "leaf_acc" in capsys.readouterr().out


def test_evaluate_warns_on_its_own_training_rows_not_on_held_out_ones(capsys, tmp_path, monkeypatch):
    """#19 item 5: the bundle records its training and validation ids; evaluating on them warns (stderr
    and JSON), on rows it never saw it does not; nothing is written without --out."""
    import yaml

    from vtag.jobs.cli import main as vtag
    from vtag.models.data import toy_labeled_frame
    from vtag.models.provenance import IDS_FILE, contains, read_ids

    out, tax, frame, _ = tiny_bundle()
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    ids = cfg["bundle"]["train"]["ids"]
    assert ids["file"] == IDS_FILE and ids["train"]["count"] + ids["validation"]["count"] == frame["video_id"].nunique()
    record = read_ids(out)
    assert contains(record["train"], frame["video_id"]).sum() == ids["train"]["count"]

    monkeypatch.chdir(tmp_path)
    write_dump(frame, tmp_path / "own", "2024-05-03")
    held_out = toy_labeled_frame(tax, n=48, seed=11)
    assert not set(held_out["video_id"]) & set(frame["video_id"])
    write_dump(held_out, tmp_path / "held", "2024-05-04")

    rc = vtag(["evaluate", "--bundle", str(out), "--data", str(tmp_path / "own"), "--json", "--threads", "1"])
    captured = capsys.readouterr()
    assert rc == 0 and "WARNING" in captured.err and "OWN DATA" in captured.err
    own = json.loads(captured.out)
    assert own["overlap"]["warning"] and own["overlap"]["train"]["rows"] == ids["train"]["count"]
    assert own["overlap"]["seen"] == len(frame)  # every row: a training or a validation row
    assert own["overlap"]["validation"]["rows"] >= ids["validation"]["count"]  # (+ Bloom false positives)
    assert set(own["legend"]) >= {"hp", "hr", "hf1", "auprc", "violations", "leaf_acc"}

    rc = vtag(["evaluate", "--bundle", str(out), "--data", str(tmp_path / "held"), "--json", "--threads", "1"])
    captured = capsys.readouterr()
    assert rc == 0 and "WARNING" not in captured.err
    held = json.loads(captured.out)  # progress never reaches stdout: --json stays clean
    # #19 item 4: off a terminal, one stderr log line per stage (not one per micro-batch)
    stages = [ln.split("] ", 1)[1] for ln in captured.err.splitlines() if ln.startswith("vtag evaluate: [")]
    assert stages[0].startswith("loading the bundle") and stages[-1] == "scoring: 48 rows", stages
    assert [s for s in stages if s.startswith("predicting")] == ["predicting 48 rows"]
    assert len(stages) == len(set(stages)) == 5
    assert held["overlap"]["warning"] is None and held["overlap"]["seen"] <= 1

    # the table form: a one-line legend per metric; still nothing written without --out
    rc = vtag(["evaluate", "--bundle", str(out), "--data", str(tmp_path / "held"), "--threads", "1"])
    text = capsys.readouterr().out
    assert rc == 0 and "hf1: hierarchical F1" in text and "violations: share of rows" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["held", "own"]


def test_evaluate_tags_every_row_and_scores_the_labeled_ones(capsys):
    """Rows whose label is missing or not in the bundle's taxonomy (a later year's new categories)
    are tagged but not scored, and the report says how many and which labels; a dump with no
    scorable row is refused with that count."""
    import pytest

    from vtag.jobs.cli import main as vtag

    out, tax, frame, _ = tiny_bundle()
    root = tmp_root()
    odd = frame.copy()
    odd["labels"] = [["9001"] if i % 5 == 0 else (None if i % 7 == 0 else lab)
                     for i, lab in enumerate(frame["labels"])]
    n_unknown = sum(1 for i in range(len(odd)) if i % 5 == 0)
    n_missing = sum(1 for i in range(len(odd)) if i % 5 != 0 and i % 7 == 0)
    write_dump(odd, root / "odd", "2024-05-03")
    assert vtag(["evaluate", "--bundle", str(out), "--data", str(root / "odd"), "--json", "--threads", "1"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["rows"] == len(frame)
    assert rep["overall"]["n"] == len(frame) - n_unknown - n_missing
    assert rep["labels"] == {"rows_without_label": n_missing, "rows_unknown_label": n_unknown,
                             "unknown_labels": {"9001": n_unknown}, "unknown_extra_tags": 0}
    assert vtag(["evaluate", "--bundle", str(out), "--data", str(root / "odd"), "--threads", "1"]) == 0
    assert f"{n_unknown + n_missing} of {len(frame)} rows were tagged (and replayed) but not scored" in \
        capsys.readouterr().out.replace("\n", " ")
    none = frame.copy()
    none["labels"] = [["9001"]] * len(frame)
    write_dump(none, root / "none", "2024-05-03")
    with pytest.raises(SystemExit, match="none of the .* rows .* has a primary label in the bundle's taxonomy"):
        vtag(["evaluate", "--bundle", str(out), "--data", str(root / "none"), "--threads", "1"])


def test_vtag_evaluate_scores_only_the_days_asked_for(capsys):
    import pytest

    from vtag.jobs.cli import main as vtag

    out, tax, frame, _ = tiny_bundle()
    root = tmp_root()
    write_dump(frame.iloc[:7], root / "dump", "2024-05-03")
    write_dump(frame.iloc[7:], root / "dump", "2024-05-04")
    rc = vtag(["evaluate", "--bundle", str(out), "--data", str(root / "dump"), "--dates", "2024-05-04..",
               "--json", "--threads", "1"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == report["overall"]["n"] == len(frame) - 7 and report["dates"] == "2024-05-04.."
    with pytest.raises(SystemExit, match="vtag evaluate: no rows in the dt partitions .* selected by --dates "
                                         "2024-05-05; days there: 2024-05-03 .. 2024-05-04"):
        vtag(["evaluate", "--bundle", str(out), "--data", str(root / "dump"), "--dates", "2024-05-05"])
