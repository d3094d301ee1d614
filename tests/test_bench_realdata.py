"""bench/realdata.py: the peers-and-vtag comparison on a labeled dump with its own taxonomy, labels
at any depth (partial labels)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def _dump(tmp_path):
    from vtag.hierarchy.taxonomy import Taxonomy
    from vtag.models.data import toy_labeled_frame, write_dump

    tax = Taxonomy.load(REPO / "tests" / "data" / "tiny-taxonomy.yaml")
    frame = toy_labeled_frame(tax, n=160, seed=3)
    # every third row's label stops one level up (a partial label), one row has an unknown label
    frame["labels"] = [[tax.path(x[0])[-2]] if i % 3 == 0 and len(tax.path(x[0])) > 1 else list(x)
                       for i, x in enumerate(frame["labels"])]
    frame.loc[5, "labels"] = ["no_such_node"]
    frame["upload_ts"] = pd.Timestamp("2024-05-01", tz="UTC") + pd.to_timedelta(range(len(frame)), unit="h")
    root = tmp_path / "dump"
    write_dump(frame.iloc[:100], root, "2024-05-01")
    write_dump(frame.iloc[100:], root, "2024-05-02")
    return root


@pytest.mark.slow
def test_realdata_bench_on_a_labeled_dump(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "bench"))
    import realdata

    root = _dump(tmp_path)
    rc = realdata.main(["--data", str(root), "--taxonomy", str(REPO / "tests" / "data" / "tiny-taxonomy.yaml"),
                        "--systems", "vtag,svm_tfidf,svm_tfidf_ctx", "--seeds", "1", "--vtag-epochs", "1",
                        "--md-out", str(tmp_path / "r.md")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "1 rows dropped" in out and "split in time" in out
    res = json.loads(out.strip().splitlines()[-1])
    assert set(res) == {"vtag", "vtag[static]", "svm_tfidf", "svm_tfidf_ctx"}  # replayed and static
    assert all(0.0 <= r["leaf_acc"] <= 1.0 for r in res.values())
    assert "labeled dump (bench/realdata.py)" in (tmp_path / "r.md").read_text()


def test_realdata_reads_labels_at_any_depth_and_counts_unknown_rows(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    import realdata

    from vtag.hierarchy.taxonomy import Taxonomy

    tax = Taxonomy.load(REPO / "tests" / "data" / "tiny-taxonomy.yaml")
    frame, dropped = realdata.read_labeled_dump(_dump(tmp_path), tax)
    assert dropped == 1 and len(frame) == 159
    depths = {len(tax.path(x[0])) for x in frame["labels"]}
    assert min(depths) < max(depths)
    with pytest.raises(ValueError, match="cannot read"):
        realdata.read_labeled_dump(tmp_path / "missing", tax)
