"""Progress of long commands (#19 item 4): one line per stage off a terminal, a live line on one,
never on stdout, nothing outside a command."""

from __future__ import annotations

import io
import re

from vtag.jobs import progress


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_one_log_line_per_stage_off_a_terminal(capsys):
    buf = io.StringIO()
    with progress.command("vtag tag", stream=buf) as p:
        progress.stage("day 1/2: 2026-11-20")
        progress.stage("2026-11-20: read; inferring", 2000)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and p.stages == ["day 1/2: 2026-11-20", "2026-11-20: read; inferring: 2,000 rows"]
    assert re.fullmatch(r"vtag tag: \[\d+\.\ds\] day 1/2: 2026-11-20", lines[0])
    assert lines[1].endswith("2,000 rows")
    assert capsys.readouterr().out == ""  # stdout stays clean for --json


def test_stage_outside_a_command_does_nothing(capsys):
    progress.stage("nobody listens")
    assert capsys.readouterr() == ("", "")


def test_a_terminal_gets_a_live_line_not_log_lines():
    tty = FakeTTY()
    with progress.command("vtag report", stream=tty) as p:
        assert p.live
        progress.stage("querying")
        progress.stage("drawing")
    assert "vtag report: [" not in tty.getvalue()  # no log lines: the live status replaces itself
    assert p.stages == ["querying", "drawing"]


def test_commands_nest_and_restore():
    outer, inner = io.StringIO(), io.StringIO()
    with progress.command("outer", stream=outer):
        with progress.command("inner", stream=inner):
            progress.stage("a")
        progress.stage("b")
    assert "inner: [" in inner.getvalue() and "] a" in inner.getvalue()
    assert "] b" in outer.getvalue() and "] a" not in outer.getvalue()


def test_the_same_stage_again_updates_it_without_a_new_log_line():
    buf = io.StringIO()
    with progress.command("vtag evaluate", stream=buf) as p:
        progress.stage("predicting 300 rows")
        for done in (100, 200, 300):
            progress.stage("predicting 300 rows", done)
        progress.stage("scoring", 300)
    lines = buf.getvalue().splitlines()
    assert [ln.split("] ", 1)[1] for ln in lines] == ["predicting 300 rows", "scoring: 300 rows"]
    assert p.stages == ["predicting 300 rows: 300 rows", "scoring: 300 rows"]  # the last count is kept


def test_evaluate_takes_progress_as_a_callback_and_models_never_import_jobs():
    """models/ stays below jobs/: ``vtag evaluate`` goes through vtag.jobs.cli.evaluate, which passes
    vtag.jobs.progress.stage into vtag.models.evaluate as a plain callback."""
    import ast
    import inspect

    from vtag.jobs.cli import COMMANDS
    from vtag.models import evaluate

    assert COMMANDS["evaluate"][0] == "vtag.jobs.cli.evaluate"
    assert "stage" in inspect.signature(evaluate.main).parameters
    assert "stage" in inspect.signature(evaluate.evaluate_frame).parameters
    tree = ast.parse(inspect.getsource(evaluate))
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and (m == "vtag.jobs" or m.startswith("vtag.jobs."))]
