"""``vtag evaluate`` with progress: :mod:`vtag.models.evaluate`'s command run inside a
:func:`vtag.jobs.progress.command` (a live line on a terminal, one stderr log line per stage otherwise;
stdout keeps the report, so ``--json`` stays clean). models/ never imports jobs/: the progress
reaches it as a callback.
"""

from __future__ import annotations

import argparse


def _arg_parser() -> argparse.ArgumentParser:
    from vtag.models.evaluate import _arg_parser as parser

    return parser()


def main(args: argparse.Namespace) -> int:
    """Run ``vtag evaluate`` with progress; returns the exit status.

    Parameters
    ----------
    args
        The parsed options of :func:`vtag.models.evaluate._arg_parser`.
    """
    from vtag.jobs import progress
    from vtag.models.evaluate import main as evaluate_main

    with progress.command("vtag evaluate"):
        return evaluate_main(args, stage=progress.stage)
