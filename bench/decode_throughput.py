"""Decoding throughput on one core: rows/s of ``Decoder.decode`` over 100k rows.

Uses ``conf/taxonomy/demo-v1.yaml`` when it exists (else a random taxonomy of ~1000 nodes, 800
leaves, depth 5) and two score distributions:

- ``peaky``: a softmax over leaves (temperature-scaled Gaussian logits) pushed up the tree, plus a
  little noise — what a trained model emits; few nodes pass the thresholds besides the path.
- ``flat``: uniform [0, 1) scores — the worst case for the extra-label greedy (hundreds of
  candidates per row, all ``max_candidates`` rounds run).

Prints the median of 3 runs per distribution — rows/s by wall clock and by process CPU time (the
same on an idle machine; on a shared one the CPU figure is what one free core does) — and writes
``bench/out/decode_throughput.json``.
Usage: ``python bench/decode_throughput.py [--rows 100000] [--chunk 4096] [--taxonomy FILE]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vtag.hierarchy.decode import Decoder  # noqa: E402
from vtag.hierarchy.taxonomy import Taxonomy  # noqa: E402


def random_taxonomy(rng: np.random.Generator, n_leaves: int = 800, depth: int = 5) -> Taxonomy:
    """A random tree with ``n_leaves`` leaves at levels 3..depth (~1000 nodes), 30 exclusive groups
    of siblings and 30 ``requires`` rules between level-1 subtrees."""
    nodes: list[dict] = []
    counter = iter(range(10**9))

    def add(parent: str | None, level: int, budget: int) -> None:
        nid = f"n{next(counter)}"
        nodes.append({"id": nid, "name": f"节点{nid}", "parent": parent})
        if budget <= 1 and level >= 3:
            return
        if level == depth:
            return
        # Split the leaf budget over 2..8 children (a leaf-only child when budget == 1).
        k = int(min(max(budget, 1), rng.integers(2, 9)))
        shares = np.maximum(1, rng.multinomial(max(budget - k, 0), np.ones(k) / k) + 1)
        for share in shares:
            add(nid, level + 1, int(share))

    for share in rng.multinomial(n_leaves - 8, np.ones(8) / 8) + 1:
        add(None, 1, int(share))
    by_parent: dict[str | None, list[str]] = {}
    for n in nodes:
        by_parent.setdefault(n["parent"], []).append(n["id"])
    sibling_sets = [v for k, v in by_parent.items() if k is not None and len(v) >= 2]
    exclusive = [list(rng.choice(s, size=2, replace=False)) for s in
                 rng.choice(np.array(sibling_sets, dtype=object), size=30, replace=False)]
    # requires: leaf -> leaf of another level-1 subtree, sources and targets disjoint (no chains),
    # so a closure never holds two siblings and the validator accepts every rule.
    parent_of = {n["id"]: n["parent"] for n in nodes}

    def top(nid: str) -> str:
        while parent_of[nid] is not None:
            nid = parent_of[nid]
        return nid

    leaves = [n["id"] for n in nodes if n["id"] not in by_parent]
    picked = rng.permutation(leaves)
    sources, targets = picked[: len(picked) // 2], picked[len(picked) // 2 :]
    requires = {str(a): [str(b)] for a, b in zip(sources, targets) if top(a) != top(b)}
    requires = dict(list(requires.items())[:30])
    data = {"label": "random-bench", "nodes": nodes,
            "constraints": {"exclusive": exclusive, "requires": requires}}
    return Taxonomy.from_dict(data, source="<random-bench>")


def peaky_scores(taxonomy: Taxonomy, rows: int, rng: np.random.Generator) -> np.ndarray:
    """``[rows, N]`` float32: leaf softmax (most rows put > 0.5 on one leaf) summed up the tree."""
    leaves = taxonomy.leaf_indices
    logits = rng.normal(0.0, 1.0, (rows, leaves.size)).astype(np.float32)
    logits[np.arange(rows), rng.integers(0, leaves.size, rows)] += rng.uniform(4, 9, rows).astype(np.float32)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    # an internal node's probability is the mass of its leaves (ancestor_matrix: R[i, j])
    scores = p @ taxonomy.ancestor_matrix()[:, leaves].T.astype(np.float32)
    scores += rng.uniform(0, 0.05, scores.shape).astype(np.float32)
    return np.clip(scores, 0.0, 1.0)


def flat_scores(taxonomy: Taxonomy, rows: int, rng: np.random.Generator) -> np.ndarray:
    return rng.random((rows, taxonomy.n_nodes), dtype=np.float32)


def time_decode(decoder: Decoder, scores: np.ndarray, chunk: int) -> tuple[float, float, float]:
    """One pass over ``scores`` in chunks -> (rows/s wall clock, rows/s CPU time, mean number of
    labels beyond the primary path per row). On a shared machine the CPU-time figure is the one
    that says what one free core would do."""
    extras = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, len(scores), chunk):
        out = decoder.decode(scores[start : start + chunk])
        extras += int(out.labels.sum()) - int(decoder.taxonomy.levels[out.leaf].sum())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return len(scores) / wall, len(scores) / cpu, extras / len(scores)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--taxonomy", type=Path, default=REPO / "conf" / "taxonomy" / "demo-v1.yaml")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "decode_throughput.json")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(20240601)
    if args.taxonomy.exists():
        taxonomy = Taxonomy.load(args.taxonomy)
    else:
        print(f"{args.taxonomy} not found: using a random taxonomy", file=sys.stderr)
        taxonomy = random_taxonomy(rng)
    decoder = Decoder(taxonomy, thresholds=0.5)
    print(f"taxonomy: {taxonomy!r}")
    print(f"rows={args.rows} chunk={args.chunk} runs={args.runs} (median reported), one thread")
    results = {"taxonomy": repr(taxonomy), "rows": args.rows, "chunk": args.chunk, "runs": args.runs}
    for kind, make in (("peaky", peaky_scores), ("flat", flat_scores)):
        scores = make(taxonomy, args.rows, rng)
        decoder.decode(scores[: args.chunk])  # warm-up (plan, caches)
        runs = [time_decode(decoder, scores, args.chunk) for _ in range(args.runs)]
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        results[kind] = {"rows_per_s_wall": wall, "rows_per_s_cpu": cpu, "runs_wall": [r[0] for r in runs],
                         "runs_cpu": [r[1] for r in runs], "mean_labels_beyond_path": runs[-1][2]}
        print(f"{kind:>6}: {wall:10,.0f} rows/s wall, {cpu:10,.0f} rows/s CPU time  (median of {args.runs}; "
              f"labels beyond the path per row: {runs[-1][2]:.2f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
