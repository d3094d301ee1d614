"""One-off migration of issue #17 (items 3 and 5): ``jobs/`` subpackages and the one import package ``vtag``.

Two phases, each idempotent, each over every text file of the working tree that git tracks or would
track (``bench/results/`` and ``conf/model/`` excepted: results are records, model configs are kept
as they are):

``moves``  ``git mv`` the flat ``jobs/*.py`` modules into subpackages (:data:`MOVES`) and rewrite
           module names (``jobs.tag`` -> ``jobs.pipeline.tag``, ``from jobs import retag`` ->
           ``from jobs.pipeline import retag``) and file paths (``jobs/tag.py`` ->
           ``jobs/pipeline/tag.py``) everywhere.
``vtag``   prefix every reference to the checkout's top-level packages with ``vtag.``:
           ``from models.x import`` -> ``from vtag.models.x import``, ``import jobs.tag``,
           ``"jobs.publish.replace_day"`` (mock targets), ``python -m jobs.spark.jars`` ... A dotted
           name is rewritten only when its first part after the package is a module of that package
           (or a name the package exports), so a variable called ``models`` is left alone; file paths
           (``models/schema.py``) stay, the folders do not move.

Usage (from the repository root; a branch made before the move can be ported the same way)::

    python scripts/migrate_to_vtag.py moves      # then review `git diff --stat`, commit
    python scripts/migrate_to_vtag.py vtag       # after vtag/ and setup.cfg's package_dir exist
    python scripts/migrate_to_vtag.py vtag --dry-run   # list the files that would change
    python scripts/migrate_to_vtag.py moves --only jobs/new_module.py tests/test_new.py   # port a branch

``jobs.spark`` alone is read as the old module (now ``jobs.spark.session``): port a branch with
``--only`` the files it changed rather than rerunning ``moves`` over the whole tree.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: old file -> new file (relative to the repository root)
MOVES: dict[str, str] = {
    # Spark infrastructure: the session, Delta's jars, Spark schemas from the pyarrow ones
    "jobs/spark.py": "jobs/spark/session.py",
    "jobs/spark_jars.py": "jobs/spark/jars.py",
    "jobs/schema.py": "jobs/spark/schema.py",
    # the Delta tables: definitions, column docs, quarantine reasons, catalog, metastore, maintenance
    "jobs/tables.py": "jobs/warehouse/tables.py",
    "jobs/table_docs.py": "jobs/warehouse/table_docs.py",
    "jobs/reasons.py": "jobs/warehouse/reasons.py",
    "jobs/catalog.py": "jobs/warehouse/catalog.py",
    "jobs/metastore.py": "jobs/warehouse/metastore.py",
    "jobs/maintain.py": "jobs/warehouse/maintain.py",
    # the tagging pipeline: read, validate, covers, inference, publish; tag / retag / profiles / quality
    "jobs/dumps.py": "jobs/pipeline/dumps.py",
    "jobs/validate.py": "jobs/pipeline/validate.py",
    "jobs/covers.py": "jobs/pipeline/covers.py",
    "jobs/inference.py": "jobs/pipeline/inference.py",
    "jobs/publish.py": "jobs/pipeline/publish.py",
    "jobs/publish_guard.py": "jobs/pipeline/publish_guard.py",
    "jobs/tag.py": "jobs/pipeline/tag.py",
    "jobs/retag.py": "jobs/pipeline/retag.py",
    "jobs/profiles.py": "jobs/pipeline/profiles.py",
    "jobs/profile_sources.py": "jobs/pipeline/profile_sources.py",
    "jobs/quality.py": "jobs/pipeline/quality.py",
    # analysts' tools: DuckDB and Spark SQL over the tables, the HTML report
    "jobs/query.py": "jobs/analytics/query.py",
    "jobs/sql.py": "jobs/analytics/sql.py",
    "jobs/sql_shell.py": "jobs/analytics/sql_shell.py",
    "jobs/report.py": "jobs/analytics/report.py",
    "jobs/report_data.py": "jobs/analytics/report_data.py",
    "jobs/report_render.py": "jobs/analytics/report_render.py",
    # the synthetic generator's Spark job joins its package
    "jobs/generate.py": "jobs/synth/generate.py",
    # the command line: the dispatcher and the commands that exist only as commands
    "jobs/cli.py": "jobs/cli/commands.py",
    "jobs/taxonomy_cli.py": "jobs/cli/taxonomy.py",
    "jobs/evaluate_cli.py": "jobs/cli/evaluate.py",
    "jobs/catalog_cli.py": "jobs/cli/catalog.py",
    "jobs/demo.py": "jobs/cli/demo.py",
}

#: module names that keep their name although their file moved (``jobs.cli`` is now a package that
#: re-exports ``main`` and ``COMMANDS`` from ``jobs.cli.commands``)
KEEP_NAME = {"jobs.cli"}

TOP = ("hierarchy", "models", "jobs")
#: names the top-level packages export, so ``hierarchy.Taxonomy`` / ``models.Predictor`` get the prefix too
EXPORTS = {
    "hierarchy": {"Taxonomy", "TaxonomyError", "Decoder", "DecodedBatch", "make_consistent", "diff",
                  "migration_map", "Migration", "TaxonomyDiff"},
    "models": {"Predictor"},
    "jobs": set(),
}

TEXT_SUFFIXES = {".py", ".md", ".cfg", ".toml", ".yaml", ".yml", ".sh", ".txt", ".ini"}
TEXT_NAMES = {"Makefile", "run"}
SKIP_PREFIXES = ("bench/results/", "conf/model/")
SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()


def module_of(path: str) -> str:
    mod = path.removesuffix(".py").replace("/", ".")
    return mod.removesuffix(".__init__")


MODULE_MAP = {module_of(o): module_of(n) for o, n in MOVES.items() if module_of(o) not in KEEP_NAME}
#: ``from jobs import cli`` means the dispatcher module (``cli.plain``, ``cli.COMMANDS``)
FROM_IMPORT_MAP = {**MODULE_MAP, "jobs.cli": "jobs.cli.commands"}


def text_files(only: list[str] | None = None) -> list[Path]:
    if only:
        return [ROOT / p for p in only]
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, check=True, capture_output=True).stdout.decode()
    files = []
    for rel in sorted(set(filter(None, out.split("\0")))):
        p = ROOT / rel
        if rel == SELF or rel.startswith(SKIP_PREFIXES) or p.is_symlink() or not p.is_file():
            continue
        if p.suffix in TEXT_SUFFIXES or p.name in TEXT_NAMES:
            files.append(p)
    return files


# ------------------------------------------------------------------------------ phase "moves"
def _moves_regexes() -> list[tuple[re.Pattern, object]]:
    subs: list[tuple[re.Pattern, object]] = []
    # dotted module names first, longest first; a name that became a package does not match its own children
    olds = sorted(MODULE_MAP, key=len, reverse=True)
    alts = []
    for old in olds:
        children = sorted({n[len(old) + 1:].split(".")[0] for n in MODULE_MAP.values() if n.startswith(old + ".")})
        kids = "|".join(children)
        # nor `from jobs.spark import jars` (already moved: a rerun changes nothing)
        guard = f"(?!\\.(?:{kids})\\b)(?!\\s+import\\s+(?:{kids})\\b)" if children else ""
        alts.append(re.escape(old) + r"(?![\w])" + guard)
    # not inside another dotted name, except after ``vtag.`` (a branch that already has the vtag names)
    mod_re = re.compile(r"(?:(?<=\bvtag\.)|(?<![\w.]))(?:" + "|".join(f"({a})" for a in alts) + ")")

    def mod_sub(m: re.Match) -> str:
        return MODULE_MAP[m.group(0)]

    subs.append((mod_re, mod_sub))
    # then `from jobs import retag [as r]` -> `from jobs.pipeline import retag [as r]` (its output is final:
    # `from jobs.spark import jars` must not meet the dotted rule, which renames the module jobs.spark)
    from_import = re.compile(r"^(\s*)from (vtag\.)?jobs import (\w+)(?: as (\w+))?(\s*(?:#.*)?)$", re.M)

    def from_sub(m: re.Match) -> str:
        indent, vtag, name, alias, tail = m.groups()
        new = FROM_IMPORT_MAP.get(f"jobs.{name}")
        if new is None:
            return m.group(0)
        parent, _, leaf = new.rpartition(".")
        local = alias or name
        return f"{indent}from {vtag or ''}{parent} import {leaf}" + (f" as {local}" if local != leaf else "") + tail

    subs.append((from_import, from_sub))
    # file paths
    paths = sorted(MOVES, key=len, reverse=True)
    path_re = re.compile(r"(?<![\w.-])(" + "|".join(re.escape(p) for p in paths) + r")(?![\w])")
    subs.append((path_re, lambda m: MOVES[m.group(1)]))
    return subs


def do_moves(dry_run: bool, only: list[str] | None = None) -> list[Path]:
    for old, new in MOVES.items():
        if (ROOT / old).exists() and not (ROOT / new).exists():
            if dry_run:
                print(f"git mv {old} {new}")
                continue
            (ROOT / new).parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["git", "mv", old, new], cwd=ROOT, check=True)
    return rewrite(_moves_regexes(), dry_run, only)


# ------------------------------------------------------------------------------- phase "vtag"
def _is_module(top: str, parts: list[str]) -> bool:
    """``top.parts[0]`` is a module or package of the checkout's folder ``top`` (or a name it exports)."""
    first = parts[0]
    base = ROOT / top
    return (base / f"{first}.py").is_file() or (base / first / "__init__.py").is_file() or first in EXPORTS[top]


def _vtag_regexes() -> list[tuple[re.Pattern, object]]:
    tops = "|".join(TOP)
    # import statements, also of the bare packages: `from jobs import progress`, `import hierarchy.decode as d`
    stmt = re.compile(rf"^(\s*)(from|import) ({tops})(?=[\s.])", re.M)
    dotted = re.compile(rf"(?<![\w./-])({tops})((?:\.[A-Za-z_]\w*)+)")

    def dotted_sub(m: re.Match) -> str:
        top, rest = m.group(1), m.group(2)
        return f"vtag.{top}{rest}" if _is_module(top, rest[1:].split(".")) else m.group(0)

    return [(stmt, lambda m: f"{m.group(1)}{m.group(2)} vtag.{m.group(3)}"), (dotted, dotted_sub)]


def do_vtag(dry_run: bool, only: list[str] | None = None) -> list[Path]:
    stmt, dotted = _vtag_regexes()

    def sub_file(text: str) -> str:
        # the statement rule first; its output ("vtag.jobs...") is not matched again by the dotted rule
        return dotted[0].sub(dotted[1], stmt[0].sub(stmt[1], text))

    return rewrite([(None, sub_file)], dry_run, only)


# -------------------------------------------------------------------------------------- common
def rewrite(subs: list[tuple[re.Pattern | None, object]], dry_run: bool, only: list[str] | None = None) -> list[Path]:
    changed = []
    for p in text_files(only):
        text = p.read_text(encoding="utf-8")
        new = text
        for rx, fn in subs:
            new = fn(new) if rx is None else rx.sub(fn, new)
        if new != text:
            changed.append(p)
            if not dry_run:
                p.write_text(new, encoding="utf-8")
    for p in changed:
        print(("would change " if dry_run else "changed ") + p.relative_to(ROOT).as_posix())
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("phase", choices=("moves", "vtag"))
    ap.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    ap.add_argument("--only", nargs="+", metavar="PATH", help="rewrite only these files (default: the whole tree)")
    args = ap.parse_args(argv)
    (do_moves if args.phase == "moves" else do_vtag)(args.dry_run, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
