"""The ``vtag`` command line.

Each subcommand lives in its own module exposing ``_arg_parser() -> argparse.ArgumentParser`` and
``main(args) -> int``. Only the chosen subcommand's module is imported, so ``vtag taxonomy ...``
never pays for torch or the JVM.
"""

from __future__ import annotations

import importlib
import sys

#: subcommand -> (module, one-line help). Modules may live in jobs/ or models/ (jobs -> models).
COMMANDS: dict[str, tuple[str, str]] = {
    "taxonomy": ("jobs.taxonomy_cli", "validate, show and diff taxonomy files"),
    "generate": ("jobs.generate", "write synthetic UGC dumps (Spark job)"),
    "train": ("models.train", "train a model and write a bundle"),
    "evaluate": ("models.evaluate", "evaluate a bundle on a labeled dump"),
    "tag": ("jobs.tag", "tag one day of a dump into the Delta tag tables (Spark job)"),
    "demo": ("jobs.demo", "the whole main job on the embedded defaults"),
    "retag": ("jobs.retag", "bring tag partitions to a new taxonomy version"),
    "profiles": ("jobs.profiles", "recompute the uploader_profiles table through a day (Spark job)"),
    "sql": ("jobs.sql", "Spark SQL over the tag tables"),
    "query": ("jobs.query", "DuckDB over the tag tables (no Spark)"),
    "report": ("jobs.report", "an HTML report of one day's tags"),
    "maintain": ("jobs.maintain", "OPTIMIZE / VACUUM the tag tables"),
    "quality": ("jobs.quality", "the quality gate of a tagged day: invariant, quarantine rate, drift"),
}


def _usage() -> str:
    lines = ["usage: vtag <command> [options]", "", "commands:"]
    for name, (module, text) in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            lines.append(f"  {name:<10} {text}")
    lines.append("")
    lines.append("`vtag <command> --help` shows a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"vtag: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[name][0]
    if importlib.util.find_spec(module_name) is None:
        print(f"vtag: command {name!r} is not available in this build ({module_name} missing)", file=sys.stderr)
        return 2
    module = importlib.import_module(module_name)
    parser = module._arg_parser()
    parser.prog = f"vtag {name}"
    args = parser.parse_args(rest)
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
