"""The ``vtag`` command line as a user meets it (#19 item 9): ``--version``, the usage line of nested
commands, help on every option, plain-text help, a quiet broken pipe, ``--json`` on report/maintain."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vtag.jobs.cli import commands as cli

VTAG = Path(sys.executable).with_name("vtag")
REST = re.compile(r"``|:(?:func|mod|class|data|meth|attr|obj|ref|doc):`")


def walk(parser: argparse.ArgumentParser):
    """(parser, action) for every action of ``parser`` and its nested subparsers."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from walk(sub)
        else:
            yield parser, action


def parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parsers(sub)


def all_commands():
    return [n for n, (m, _) in cli.COMMANDS.items() if __import__("importlib").util.find_spec(m) is not None]


def run_vtag(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(VTAG), *args], capture_output=True, text=True, timeout=120, **kwargs)


def test_version(capsys):
    from importlib.metadata import version

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"vtag {version('vtag')}"
    done = run_vtag("--version")
    assert done.returncode == 0 and re.fullmatch(r"vtag \d+\.\d+\.\d+\S*\n", done.stdout), done


@pytest.mark.parametrize("argv, usage", [
    (["retag", "plan", "--help"], "usage: vtag retag plan "),
    (["retag", "history", "--help"], "usage: vtag retag history "),
    (["taxonomy", "diff", "--help"], "usage: vtag taxonomy diff "),
    (["profiles", "refresh", "--help"], "usage: vtag profiles refresh "),
    (["report", "--help"], "usage: vtag report "),
])
def test_nested_usage_names_the_whole_command(capsys, argv, usage):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(usage)


def test_usage_errors_name_the_whole_command(capsys):
    with pytest.raises(SystemExit):
        cli.main(["retag", "plan"])
    assert "usage: vtag retag plan" in capsys.readouterr().err


def test_retag_plan_help_from_the_console_script():
    done = run_vtag("retag", "plan", "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: vtag retag plan"), done.stdout[:200]


@pytest.mark.parametrize("name", all_commands())
def test_every_option_has_help_text(name):
    parser = cli.command_parser(name)
    missing = [f"{p.prog} {'/'.join(a.option_strings) or a.dest}" for p, a in walk(parser)
               if not isinstance(a, argparse._HelpAction) and (not a.help or a.help is argparse.SUPPRESS)]
    assert not missing, f"options without help: {missing}"


@pytest.mark.parametrize("name", all_commands())
def test_help_is_plain_text(name):
    for p in parsers(cli.command_parser(name)):
        text = p.format_help()
        assert not REST.search(text), f"{p.prog}: reST markup in --help:\n{text}"
        assert p.prog.startswith(f"vtag {name}")


def test_plain_strips_markup():
    assert cli.plain("``vtag sql``: see :func:`vtag.jobs.warehouse.catalog.register_tables` ::") == (
        "vtag sql: see vtag.jobs.warehouse.catalog.register_tables :")
    assert cli.plain("Example::\n  x") == "Example:\n  x"


def test_report_and_maintain_take_json():
    for name in ("report", "maintain", "quality"):
        opts = {o for _, a in walk(cli.command_parser(name)) for o in a.option_strings}
        assert "--json" in opts, name


@pytest.fixture(scope="module")
def tiny_warehouse(tmp_path_factory):
    """A warehouse with an empty ``video_tags`` Delta table (written by delta-rs: no JVM)."""
    from deltalake import write_deltalake

    from vtag.models.schema import VIDEO_TAGS_SCHEMA

    wh = tmp_path_factory.mktemp("cli-wh") / "warehouse"
    write_deltalake(str(wh / "video_tags"), VIDEO_TAGS_SCHEMA.empty_table(), partition_by=["dt"])
    return wh


@pytest.mark.slow  # ~6 s (a CLI subprocess)
def test_query_into_head_has_no_traceback(tiny_warehouse):
    statement = "SELECT * FROM range(200000)"
    done = subprocess.run(
        f"'{VTAG}' query '{statement}' --limit 200000 --warehouse '{tiny_warehouse}' | head -0",
        shell=True, capture_output=True, text=True, timeout=120,
    )
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    # the exact command: the reader is gone before the result is written
    proc = subprocess.Popen([str(VTAG), "query", "SELECT 1", "--warehouse", str(tiny_warehouse)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
    assert proc.returncode in (0, 141), err.decode()


def test_broken_pipe_in_process_is_quiet(monkeypatch, tiny_warehouse):
    """Whatever the timing of the pipe: a write failing with EPIPE ends the command with 141."""
    r, w = os.pipe()
    os.close(r)
    saved = os.dup(1)
    stdout = sys.stdout
    try:
        os.dup2(w, 1)
        sys.stdout = os.fdopen(os.dup(1), "w")
        t0 = time.time()
        status = cli.main(["query", "SELECT * FROM range(50000)", "--limit", "50000", "--warehouse", str(tiny_warehouse)])
    finally:
        sys.stdout = stdout
        os.dup2(saved, 1)
        os.close(saved)
        os.close(w)
    assert status == 141 and time.time() - t0 < 60
