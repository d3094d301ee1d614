"""Statements for ``vtag sql``: ``;``-separated scripts (``-f file.sql``, a pipe on stdin) and the
interactive shell (``vtag sql`` on a terminal without a statement) — one Spark session for all of
them, each statement's result printed in turn (#19 item 3). No Spark import here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterable

HISTORY = Path(os.environ.get("VTAG_SQL_HISTORY") or Path.home() / ".vtag_sql_history")
PROMPT, MORE = "vtag> ", "  ...> "


def split_statements(text: str) -> list[str]:
    """The statements of ``text`` split at ``;`` outside quotes (``'``, ``"``, backticks) and
    comments (``-- ...`` to the end of the line, ``/* ... */``); empty statements are dropped.

    Parameters
    ----------
    text
        One or more SQL statements.
    """
    out, cur = [], []
    i, n = 0, len(text)
    quote: str | None = None
    while i < n:
        c = text[i]
        if quote:
            cur.append(c)
            if c == "\\" and quote != "`" and i + 1 < n:  # Spark strings take backslash escapes
                cur.append(text[i + 1])
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in ("'", '"', "`"):
            quote = c
            cur.append(c)
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            cur.append(" ")
            continue
        elif c == ";":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return [s.strip() for s in out if s.strip()]


def complete(buffer: str) -> bool:
    """Whether ``buffer`` ends a statement: its last non-comment character outside quotes is ``;``.

    Parameters
    ----------
    buffer
        The lines typed so far.
    """
    marker = "__vtag_end__"
    parts = split_statements(buffer.rstrip() + "\n" + marker)
    return parts[-1] == marker and len(parts) > 1


def run_all(statements: Iterable[str], run_one: Callable[[str], bool], echo: bool = False) -> int:
    """Run each statement with ``run_one`` (which prints its result or error and returns success);
    returns 0 when all succeeded, else 1 (every statement runs: a script reports all its errors).

    Parameters
    ----------
    statements
        The statements, in order.
    run_one
        Runs one statement.
    echo
        Print each statement before its result (scripts of several statements).
    """
    failed = 0
    for k, statement in enumerate(statements):
        if echo:
            print(("\n" if k else "") + f"-- {statement.splitlines()[0][:100]}", flush=True)
        failed += not run_one(statement)
    return 1 if failed else 0


def repl(run_one: Callable[[str], bool], read: Callable[[str], str] = input) -> int:
    """The interactive shell: multi-line statements ended by ``;``, history in ``~/.vtag_sql_history``,
    ``quit``/``exit``/Ctrl-D to leave, Ctrl-C to drop the statement being typed; returns 0.

    Parameters
    ----------
    run_one
        Runs one statement and prints its result.
    read
        Reads one line after a prompt (``input``; tests pass another).
    """
    try:
        import readline

        readline.set_history_length(2000)
        if HISTORY.is_file():
            readline.read_history_file(str(HISTORY))
    except (ImportError, OSError):
        readline = None  # type: ignore[assignment]
    print("vtag sql shell: statements end with ';'. quit or Ctrl-D leaves.", file=sys.stderr)
    buffer = ""
    try:
        while True:
            try:
                line = read(MORE if buffer else PROMPT)
            except KeyboardInterrupt:
                print(file=sys.stderr)
                buffer = ""
                continue
            except EOFError:
                break
            if not buffer and line.strip().rstrip(";").lower() in ("quit", "exit", r"\q"):
                break
            buffer += line + "\n"
            if complete(buffer):
                run_all(split_statements(buffer), run_one)
                buffer = ""
        if buffer.strip():
            run_all(split_statements(buffer), run_one)
    finally:
        if readline is not None:
            try:
                readline.write_history_file(str(HISTORY))
            except OSError:
                pass
    return 0
