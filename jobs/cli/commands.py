"""The ``vtag`` command line.

Each subcommand lives in its own module exposing ``_arg_parser() -> argparse.ArgumentParser`` and
``main(args) -> int``. Only the chosen subcommand's module is imported, so ``vtag taxonomy ...``
never pays for torch or the JVM.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from vtag.jobs.config import ConfigError

#: subcommand -> (module, one-line help). Modules may live in jobs/ or models/ (jobs -> models).
COMMANDS: dict[str, tuple[str, str]] = {
    "taxonomy": ("vtag.jobs.cli.taxonomy", "validate, show and diff taxonomy files"),
    "generate": ("vtag.jobs.synth.generate", "write synthetic UGC dumps (Spark job)"),
    "train": ("vtag.models.train", "train a model and write a bundle"),
    "evaluate": ("vtag.jobs.cli.evaluate", "evaluate a bundle on a labeled dump"),
    "promote": ("vtag.jobs.cli.promote", "switch the production bundle to a retrained one where it is not worse"),
    "tag": ("vtag.jobs.pipeline.tag", "tag one day of a dump into the Delta tag tables (Spark job)"),
    "demo": ("vtag.jobs.cli.demo", "the whole main job on the embedded defaults"),
    "retag": ("vtag.jobs.pipeline.retag", "bring tag partitions to a new taxonomy version"),
    "profiles": ("vtag.jobs.pipeline.profiles", "recompute the uploader_profiles table through a day (Spark job)"),
    "sql": ("vtag.jobs.analytics.sql", "Spark SQL over the tag tables"),
    "catalog": ("vtag.jobs.cli.catalog", "register tables, views and comments in the metastore (writes)"),
    "query": ("vtag.jobs.analytics.query", "DuckDB over the tag tables (no Spark)"),
    "report": ("vtag.jobs.analytics.report", "an HTML report of one day's tags"),
    "maintain": ("vtag.jobs.warehouse.maintain", "OPTIMIZE / VACUUM the tag tables"),
    "quality": ("vtag.jobs.pipeline.quality", "the quality gate of a tagged day: invariant, quarantine rate, drift"),
}


def version() -> str:
    """The installed distribution's version (``vtag --version``; ``0.0.0`` in a checkout that was
    never installed)."""
    from vtag import __version__

    return __version__


def _usage() -> str:
    lines = ["usage: vtag [--version] <command> [options]", "", "commands:"]
    for name, (module, text) in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            lines.append(f"  {name:<10} {text}")
    lines.append("")
    lines.append("`vtag <command> --help` shows a command's options.")
    return "\n".join(lines)


#: reStructuredText markup of module docstrings: ``literal``, :role:`target`, a trailing "::"
_ROLE = re.compile(r":(?:func|mod|class|data|meth|attr|obj|ref|doc):`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def plain(text: str | None) -> str | None:
    """``text`` without reStructuredText markup (help is read in a terminal, not rendered)."""
    if not text:
        return text
    text = _ROLE.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    return re.sub(r"::$", ":", text, flags=re.M)


def finish_parser(parser: argparse.ArgumentParser, prog: str) -> argparse.ArgumentParser:
    """Name ``parser`` and every nested subparser by its full command (``vtag retag plan``) and
    make descriptions, epilogs and option help plain text; returns ``parser``.

    Parameters
    ----------
    parser
        A subcommand's parser (``module._arg_parser()``).
    prog
        Its command line name, e.g. ``vtag retag``.
    """
    parser.prog = prog
    parser.description = plain(parser.description)
    parser.epilog = plain(parser.epilog)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                finish_parser(sub, f"{prog} {name}")
                if sub.description is None and helps.get(name):
                    sub.description = plain(helps[name])
            for choice in action._choices_actions:
                choice.help = plain(choice.help)
        elif action.help and action.help is not argparse.SUPPRESS:
            action.help = plain(action.help)
    return parser


def command_parser(name: str) -> argparse.ArgumentParser:
    """The finished parser of subcommand ``name`` (imports its module only).

    Parameters
    ----------
    name
        A key of :data:`COMMANDS`.
    """
    module = importlib.import_module(COMMANDS[name][0])
    return finish_parser(module._arg_parser(), f"vtag {name}")


def _quiet_broken_pipe() -> int:
    """stdout's reader went away (``vtag query ... | head``): no traceback, no flush error at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141  # 128 + SIGPIPE, as a shell reports a command killed by a broken pipe


def main(argv: list[str] | None = None) -> int:
    """Run ``vtag`` with ``argv`` (default: the process's arguments); returns the exit status.

    Parameters
    ----------
    argv
        The arguments after ``vtag``.
    """
    try:
        status = _main(argv)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        return _quiet_broken_pipe()


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--version":
        print(f"vtag {version()}")
        return 0
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
    args = command_parser(name).parse_args(rest)
    try:
        return int(module.main(args) or 0)
    except ConfigError as exc:  # a bad job conf or --conf: the message is the answer
        print(f"vtag {name}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
