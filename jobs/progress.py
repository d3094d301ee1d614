"""Progress of the long commands (#19 item 4): on a terminal a live line (rich: a spinner, the stage,
rows done and the elapsed time) on stderr; otherwise one log line per stage on stderr
(``vtag tag: [12.3s] 2026-11-20: read 2,000 rows``). stdout is never touched, so ``--json`` output
stays clean. Jobs call :func:`stage` wherever they are; outside :func:`command` (tests, library use)
it does nothing. A stage reported again with the same text and a new row count (rows done inside a
long stage) updates the live line only: off a terminal it stays one log line per stage.

Library code below jobs/ (``models/``, which must not import jobs) takes a plain callback of the
shape of :func:`stage` instead; the jobs-side command passes :func:`stage` in (``vtag evaluate``).
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import IO, Iterator

_ACTIVE: list[Progress] = []


class Progress:
    """The progress of one command.

    Parameters
    ----------
    name
        The command, e.g. ``vtag tag`` (the prefix of each log line).
    stream
        Where to write (default: stderr).
    live
        A live line (rich) instead of log lines; default: whether ``stream`` is a terminal.
    """

    def __init__(self, name: str, stream: IO[str] | None = None, live: bool | None = None):
        self.name = name
        self.stream = stream or sys.stderr
        self.live = bool(self.stream.isatty()) if live is None else live
        self.t0 = time.monotonic()
        self.stages: list[str] = []
        self._status = None
        self._text: str | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def stage(self, text: str, rows: int | None = None) -> None:
        """Report the start of a stage (``rows``: rows done or in hand, when known); the same ``text``
        again is an update of that stage (the live line changes, no new log line).

        Parameters
        ----------
        text
            What is happening now.
        rows
            A row count to show beside it.
        """
        line = text + (f": {rows:,} rows" if rows is not None else "")
        repeat = text == self._text
        self._text = text
        if repeat:
            self.stages[-1] = line
        else:
            self.stages.append(line)
        if self.live:
            if self._status is None:
                from rich.console import Console

                console = Console(file=self.stream, stderr=self.stream is sys.stderr)
                self._status = console.status("", spinner="dots")
                self._status.start()
            self._status.update(f"{self.name} · {line} · {self.elapsed():.0f}s")
        elif not repeat:
            print(f"{self.name}: [{self.elapsed():.1f}s] {line}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


@contextmanager
def command(name: str, stream: IO[str] | None = None, live: bool | None = None) -> Iterator[Progress]:
    """Make a :class:`Progress` the active one for the duration of a command.

    Parameters
    ----------
    name, stream, live
        See :class:`Progress`.
    """
    p = Progress(name, stream, live)
    _ACTIVE.append(p)
    try:
        yield p
    finally:
        p.close()
        _ACTIVE.remove(p)


def stage(text: str, rows: int | None = None) -> None:
    """Report a stage to the active command's progress (nothing outside :func:`command`).

    Parameters
    ----------
    text
        What is happening now.
    rows
        A row count to show beside it.
    """
    if _ACTIVE:
        _ACTIVE[-1].stage(text, rows)


def one_line(exc: BaseException) -> str:
    """An error as one stderr line: the first line of its message (for a Spark error its condition,
    message, SQLSTATE and position; the plan and the JVM stack trace stay out), else its type's name.

    Parameters
    ----------
    exc
        The exception raised (pyspark, delta-rs, ...).
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
