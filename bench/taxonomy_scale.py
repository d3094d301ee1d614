"""Taxonomy scale: seconds and peak memory of loading and validating 1k, 10k and 100k-node taxonomies.

For each size, :func:`generate_taxonomy` writes a deterministic taxonomy file (5 levels, leaves at
levels 3, 4 and 5, exclusive groups of siblings, ``requires`` rules between level-1 subtrees and a
few ``cooccur`` pairs), and a fresh Python process runs what ``vtag taxonomy validate`` runs:
``Taxonomy.load`` (parse + validation) and ``vtag.jobs.cli.taxonomy.summary``. That process reports the
wall-clock seconds and its peak RSS (``ru_maxrss``, whole process: interpreter, numpy and yaml
included; the RSS right after the imports is given beside it). Each run is capped by ``--timeout``
and an address-space limit (``--mem-cap-gb``, ``RLIMIT_AS``): a run past either is recorded as
``failed: timeout`` / ``failed: out of memory`` with the peak RSS it reached.

``--code-root`` picks whose ``hierarchy`` package is timed (default: this checkout), so the same
script times an older commit from a worktree::

    git worktree add --detach /tmp/vtag-old HEAD
    .venv/bin/python bench/taxonomy_scale.py --code-root /tmp/vtag-old --label before --sizes 1000,5000,10000,100000
    .venv/bin/python bench/taxonomy_scale.py --label after --sizes 1000,5000,10000,100000

Each run prints a table and writes (or, with ``--append``, adds a section to) ``--md-out``
(default ``bench/results/taxonomy_scale.md``); one JSON object with the rows is the last line.
BLAS runs on one thread (the old code's validation is dense float32 matmuls).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

#: share of the nodes per level (level 5 takes the rest)
_LEVEL_SHARE = (0.004, 0.04, 0.30, 0.36)


def generate_taxonomy(n_nodes: int, seed: int = 0, n_exclusive: int = 20, n_requires: int = 20,
                      n_cooccur: int = 20) -> dict:
    """A valid taxonomy of exactly ``n_nodes`` nodes (>= 60) as the flat YAML structure.

    Five levels; every level-1 and level-2 node has children, so leaves sit at levels 3, 4 and 5.
    Exclusive groups are 2-4 siblings under the first half of the level-1 nodes; ``requires``
    rules go from nodes there to nodes under the second half (which holds no exclusive member), so
    no rule contradicts a group.
    """
    if n_nodes < 60:
        raise ValueError(f"n_nodes must be at least 60, got {n_nodes}")
    rng = random.Random(seed)
    counts = [max(2, round(n_nodes * s)) for s in _LEVEL_SHARE]
    counts.append(n_nodes - sum(counts))
    levels: list[list[str]] = []
    parent: dict[str, str | None] = {}
    for h, count in enumerate(counts, start=1):
        ids = [f"n{h}_{i}" for i in range(count)]
        if h == 1:
            for nid in ids:
                parent[nid] = None
        else:
            above = levels[-1]
            if h <= 3:  # every node above gets a child first, the rest at random
                pool = above + [rng.choice(above) for _ in range(count - len(above))]
            else:  # about half the nodes above get children
                pool = [rng.choice(above[: max(1, len(above) // 2)]) for _ in range(count)]
            rng.shuffle(pool)
            for nid, p in zip(ids, pool):
                parent[nid] = p
        levels.append(ids)
    children: dict[str, list[str]] = {}
    for nid, p in parent.items():
        if p is not None:
            children.setdefault(p, []).append(nid)
    top = {nid: nid for nid in levels[0]}
    for lvl in levels[1:]:
        for nid in lvl:
            top[nid] = top[parent[nid]]  # type: ignore[index]
    half = set(levels[0][: len(levels[0]) // 2])
    exclusive, used = [], set()
    sibling_sets = [kids for p, kids in sorted(children.items()) if top[p] in half and len(kids) >= 2]
    rng.shuffle(sibling_sets)
    for kids in sibling_sets[:n_exclusive]:
        group = rng.sample(kids, min(len(kids), rng.randint(2, 4)))
        exclusive.append({"name": f"excl_{len(exclusive)}", "ids": sorted(group)})
        used.update(group)
    lower = [nid for lvl in levels[2:] for nid in lvl]
    sources = [nid for nid in lower if top[nid] in half]
    targets = [nid for nid in lower if top[nid] not in half]
    requires: dict[str, list[str]] = {}
    for a in rng.sample(sources, min(n_requires, len(sources))):
        requires[a] = sorted(rng.sample(targets, rng.randint(1, 2)))
    cooccur = []
    for _ in range(n_cooccur):
        a, b = rng.sample(lower, 2)
        cooccur.append([a, b, round(rng.uniform(0.05, 1.0), 3)])
    nodes = [{"id": nid, "name": f"类目{nid}", "name_en": f"category {nid}", "parent": parent[nid]}
             for lvl in levels for nid in lvl]
    return {
        "label": f"scale-{n_nodes}",
        "description": f"generated by bench/taxonomy_scale.py (seed {seed})",
        "nodes": nodes,
        "constraints": {"exclusive": exclusive, "requires": requires, "cooccur": cooccur},
    }


def write_taxonomy(n_nodes: int, path: Path, seed: int = 0) -> Path:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text = yaml.dump(generate_taxonomy(n_nodes, seed), Dumper=dumper, allow_unicode=True, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------- the measured child
_CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
if os.path.isdir(os.path.join(sys.argv[1], "vtag")):  # its vtag/ links to its hierarchy/ and jobs/
    from vtag.hierarchy.taxonomy import Taxonomy
    from vtag.jobs.cli.taxonomy import summary
else:  # a checkout from before the one vtag package (#17)
    from hierarchy.taxonomy import Taxonomy
    from jobs.taxonomy_cli import summary
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
tax = Taxonomy.load(sys.argv[2])
t1 = time.perf_counter()
info = summary(tax)
t2 = time.perf_counter()
print(json.dumps({"load_s": t1 - t0, "validate_s": t2 - t0, "base_rss_kib": base, "nodes": info["nodes"],
                  "leaves": info["leaves"], "max_depth": info["max_depth"], "version": info["version"]}))
"""


def measure(code_root: Path, taxonomy_file: Path, timeout_s: float, mem_cap_gb: float) -> dict:
    """Load + validate ``taxonomy_file`` with ``code_root``'s code in a fresh process."""
    cap = int(mem_cap_gb * 2**30)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(code_root), str(taxonomy_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limit)
    deadline = time.monotonic() + timeout_s
    status, rusage, timed_out = None, None, False
    while status is None:
        pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            status, rusage = st, ru
            break
        if time.monotonic() > deadline:
            proc.send_signal(signal.SIGKILL)
            timed_out = True
            _, status, rusage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.communicate()
    row: dict = {"peak_rss_mib": round(rusage.ru_maxrss / 1024, 1)}
    if timed_out:
        row["error"] = f"timeout after {timeout_s:.0f} s"
    elif proc.returncode != 0:
        tail = err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"
        oom = "MemoryError" in err or "Unable to allocate" in err or "cannot allocate" in err.lower()
        row["error"] = (f"out of memory (address-space cap {mem_cap_gb:g} GiB)" if oom else tail)[:200]
    else:
        res = json.loads(out.strip().splitlines()[-1])
        row.update(res)
        row["base_rss_mib"] = round(res.pop("base_rss_kib") / 1024, 1)
        row["load_s"], row["validate_s"] = round(res["load_s"], 3), round(res["validate_s"], 3)
    return row


def _fmt_table(rows: list[dict]) -> list[str]:
    out = ["| nodes | leaves | file MiB | load + validate (s) | of which Taxonomy.load (s) | peak RSS (MiB) "
           "| RSS after imports (MiB) |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['n']:,} | - | {r['file_mib']} | failed: {r['error']} | - | "
                       f"{r['peak_rss_mib']:,.0f} (at failure) | - |")
        else:
            out.append(f"| {r['nodes']:,} | {r['leaves']:,} | {r['file_mib']} | {r['validate_s']:.2f} | "
                       f"{r['load_s']:.2f} | {r['peak_rss_mib']:,.0f} | {r['base_rss_mib']:,.0f} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000", help="node counts, comma-separated")
    ap.add_argument("--code-root", default=str(REPO), help="checkout whose hierarchy/ is timed")
    ap.add_argument("--label", default="", help="section title in the results file (e.g. before, after)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per size before the run is killed")
    ap.add_argument("--mem-cap-gb", type=float, default=6.0, help="address-space cap per run (GiB)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--md-out", default=str(REPO / "bench" / "results" / "taxonomy_scale.md"))
    ap.add_argument("--append", action="store_true", help="add a section to --md-out instead of replacing it")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    code_root = Path(args.code_root).resolve()
    commit = subprocess.run(["git", "-C", str(code_root), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", str(code_root), "status", "--porcelain", "hierarchy"],
                           capture_output=True, text=True).stdout.strip()
    code = f"`{code_root}` at {commit}" + (" + uncommitted hierarchy/ changes" if dirty else "")
    rows = []
    with tempfile.TemporaryDirectory(prefix="vtag-taxscale-") as tmp:
        for n in sizes:
            path = write_taxonomy(n, Path(tmp) / f"scale-{n}.yaml", args.seed)
            row = {"n": n, "file_mib": round(path.stat().st_size / 2**20, 1)}
            row.update(measure(code_root, path, args.timeout, args.mem_cap_gb))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    table = _fmt_table(rows)
    print("\n".join(table))
    cores = os.cpu_count()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cmd = "python bench/taxonomy_scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    section = [
        f"## {args.label or 'run'}",
        "",
        f"Code: {code}. Command: `{cmd}`",
        "",
        f"Machine: {cores} cores, {mem_gib:.0f} GiB ({platform.machine()}), shared with other work while it "
        f"ran; one BLAS thread; caps per size: {args.timeout:.0f} s, {args.mem_cap_gb:g} GiB address space.",
        "",
        *table,
        "",
    ]
    md = Path(args.md_out)
    md.parent.mkdir(parents=True, exist_ok=True)
    header = [
        "# Taxonomy scale: `Taxonomy.load` + validation",
        "",
        "What `vtag taxonomy validate` runs (`Taxonomy.load` and `vtag.jobs.cli.taxonomy.summary`), in a fresh "
        "process per size, on taxonomies from `bench/taxonomy_scale.py`'s generator (5 levels, leaves at "
        "3-5, 20 exclusive groups, 20 requires rules, 20 cooccur pairs). Peak RSS is the whole process "
        "(`ru_maxrss`: interpreter, numpy and yaml included).",
        "",
    ]
    if args.append and md.exists():
        md.write_text(md.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + "\n".join(section), encoding="utf-8")
    else:
        md.write_text("\n".join(header + section), encoding="utf-8")
    print(json.dumps({"label": args.label, "code": code, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
