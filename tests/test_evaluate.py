"""``vtag evaluate``: metrics overall and per level-1 subtree, printed and saved."""

from __future__ import annotations

import json

import numpy as np
from test_train_support import (
    tiny_bundle,
    tmp_root,
    torch_one_thread,  # noqa: F401  (autouse fixture)
)

from models.data import write_dump
from models.evaluate import true_labels


def test_true_labels_are_ancestor_closed():
    _, tax, frame, _ = tiny_bundle()
    labels, leaf = true_labels(tax, frame)
    assert labels.shape == (len(frame), tax.n_nodes)
    assert (tax.close_ancestors(labels) == labels).all()
    assert (leaf >= 0).all() and labels[np.arange(len(frame)), leaf].all()


def test_vtag_evaluate_prints_and_saves_metrics(capsys):
    from jobs.cli import main as vtag

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
