"""vtag against peers on any labeled dump and its taxonomy (a user's own data, as they bring it).

Data: a labeled dump root in the DESIGN.md "Input" format (``<root>/dt=YYYY-MM-DD/`` Parquet or
JSON Lines with ``labels: array<string>``; several roots comma-separated), or ``--train ROOT --test
ROOT``; ``--taxonomy`` the taxonomy file the labels' node ids belong to. Labels may stop at
internal nodes (partial labels): every system is scored on the exact primary node (leaf accuracy,
level-1 accuracy) and on hierarchical F1, for labels at any depth as HiClass scores them. Rows
whose ``labels[0]`` is not a node of the taxonomy are dropped and counted.

Split (``--split``): ``time`` (default, the headline: the earliest 80 % of the rows by
``upload_ts`` train, the latest 20 % test, uploaders as they come; returning and new uploaders are
reported apart) or ``uploader`` (no uploader on both sides). Systems and everything else are those
of ``bench/bilibili.py`` (``--help`` there): the shipped ``vtag`` config through the production
path (``vtag.models.training.train`` -> bundle -> ``Predictor``, exactly what ``vtag train`` /
``vtag evaluate`` run), TF-IDF + linear SVM with and without uploader / duration one-hots, logistic
regression, HiClass and a fastText-style bag, each peer's settings chosen on the training side's
own validation split.

Usage::

    python bench/realdata.py --data DUMP_ROOT --taxonomy conf/taxonomy/X.yaml [--split time|uploader]
        [--seeds 3] [--systems vtag,svm_tfidf,...] [--workers 2 --threads 1] [--md-out F] [--json-out F]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pathlib import Path  # noqa: E402

import bilibili  # noqa: E402  (sizes the BLAS pools before numpy/torch load)
import pandas as pd  # noqa: E402


def read_labeled_dump(path: str | Path, taxonomy) -> tuple[pd.DataFrame, int]:
    """A labeled dump root (or comma-separated roots) -> ``(frame, rows dropped)``: rows whose
    ``labels[0]`` is a taxonomy node are kept (extra unknown tags are dropped from the list)."""
    from vtag.models.data import DumpError, check_labels, read_dumps

    try:
        frame = read_dumps(str(path))
    except (DumpError, OSError) as e:
        raise ValueError(f"{path}: cannot read a labeled dump: {e}") from e
    if "labels" not in frame.columns:
        raise ValueError(f"{path}: no 'labels' column (a labeled dump has labels: array<string>)")
    out = check_labels(frame, taxonomy)  # logs the counts and the most frequent unknown labels
    if "cover" not in out.columns:
        out["cover"] = None
    return out, int(len(frame) - len(out))


def arg_parser():
    ap = bilibili._arg_parser()
    ap.description = __doc__.split("\n\n")[0]
    for action in ap._actions:
        if action.dest == "data":
            action.default, action.help = None, "labeled dump root(s), comma-separated (split by --split)"
        elif action.dest == "taxonomy":
            action.default, action.required = None, True
            action.help = "the taxonomy file of the labels (conf/taxonomy/*.yaml format)"
        elif action.dest in ("train", "test"):
            action.help = f"{action.dest} dump root (with the other: no split)"
    return ap


def main(argv: list[str] | None = None) -> int:
    args = arg_parser().parse_args(argv)
    if not args.data and not args.train:
        raise SystemExit("realdata.py: give --data ROOT (or --train ROOT --test ROOT)")
    return bilibili.main(argv, reader=read_labeled_dump, parser=arg_parser(),
                         title="vtag vs peers on a labeled dump (bench/realdata.py)", script="bench/realdata.py")


if __name__ == "__main__":
    sys.exit(main())
