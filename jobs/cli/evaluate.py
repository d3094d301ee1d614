"""``vtag evaluate`` with progress: :mod:`models.evaluate`'s command run inside a
:func:`jobs.progress.command` (a live line on a terminal, one stderr log line per stage otherwise;
stdout keeps the report, so ``--json`` stays clean). models/ never imports jobs/: the progress
reaches it as a callback.
"""

from __future__ import annotations

import argparse


def _arg_parser() -> argparse.ArgumentParser:
    from models.evaluate import _arg_parser as parser

    return parser()


def main(args: argparse.Namespace) -> int:
    """Run ``vtag evaluate`` with progress; returns the exit status.

    Parameters
    ----------
    args
        The parsed options of :func:`models.evaluate._arg_parser`.
    """
    from jobs import progress
    from models.evaluate import main as evaluate_main

    with progress.command("vtag evaluate"):
        return evaluate_main(args, stage=progress.stage)
