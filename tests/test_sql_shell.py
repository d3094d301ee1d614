"""``vtag sql`` statements (#19 items 1 and 3): ;-separated scripts, -f FILE, stdin, the interactive
shell, and one-line errors."""

from __future__ import annotations

import io

import pytest

from vtag.jobs.analytics.sql_shell import complete, repl, run_all, split_statements


def test_split_statements_respects_quotes_and_comments():
    text = "SELECT 'a;b' AS s; SELECT 2 -- no;split\n;\n/* c;d */ SELECT `e;f` FROM t;;  "
    assert split_statements(text) == ["SELECT 'a;b' AS s", "SELECT 2", "SELECT `e;f` FROM t"]
    assert split_statements(r"SELECT 'it\'s; fine'") == [r"SELECT 'it\'s; fine'"]
    assert split_statements(" ; -- only a comment\n") == []


@pytest.mark.parametrize("buffer, done", [
    ("SELECT 1;", True), ("SELECT 1", False), ("SELECT ';", False), ("SELECT 1; -- note", True),
    ("SELECT 1 -- a;", False), ("SELECT\n  1\n;", True), (";", False),
])
def test_complete(buffer, done):
    assert complete(buffer) is done


def test_only_the_names_a_statement_uses_are_registered():
    from vtag.jobs.warehouse.catalog import needed_names

    assert needed_names(["SELECT count(*) FROM video_tags"]) == {"video_tags"}
    assert needed_names(["SELECT * FROM vtag.video_tags_latest"]) == {"video_tags_latest", "video_tags"}
    assert needed_names(["SELECT * FROM video_uploads; DESCRIBE HISTORY tag_runs"]) == {
        "video_uploads", "ugc_dump", "tag_runs"}
    assert needed_names(["SHOW TABLES"]) is None  # names nothing: everything is registered


def test_run_all_runs_every_statement_and_reports_failure(capsys):
    seen = []
    rc = run_all(["SELECT 1", "SELECT nope", "SELECT 3"], lambda s: seen.append(s) or s != "SELECT nope", echo=True)
    assert rc == 1 and seen == ["SELECT 1", "SELECT nope", "SELECT 3"]
    out = capsys.readouterr().out
    assert "-- SELECT 1" in out and "-- SELECT 3" in out


def test_repl_multiline_statements_and_quit(monkeypatch, tmp_path):
    monkeypatch.setattr("vtag.jobs.analytics.sql_shell.HISTORY", tmp_path / "history")
    lines = iter(["SELECT 1,", "  2;", "SELECT 'x;'", ";", "SELECT 4; SELECT 5;", "quit"])
    ran = []

    def read(prompt):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    assert repl(lambda s: ran.append(s) or True, read) == 0
    assert ran == ["SELECT 1,\n  2", "SELECT 'x;'", "SELECT 4", "SELECT 5"]


@pytest.mark.spark
def test_sql_runs_each_statement_a_file_and_stdin(spark, analysts_warehouse, tmp_path, capsys, monkeypatch):
    from vtag.jobs.cli import main as cli_main

    wh = analysts_warehouse
    base = ["--warehouse", str(wh.warehouse), "--conf", "spark.sql.catalogImplementation=in-memory"]
    assert cli_main(["sql", "SELECT 1 AS first_one; SELECT count(*) AS n_days FROM (SELECT DISTINCT dt FROM video_tags)",
                     *base]) == 0
    out = capsys.readouterr().out
    assert "first_one" in out and "n_days" in out and f"{len(wh.days)}" in out  # both results printed

    script = tmp_path / "q.sql"
    script.write_text("-- a report\nSELECT 'a;b' AS s;\nSELECT count(*) AS n FROM video_tags;\n", encoding="utf-8")
    assert cli_main(["sql", "-f", str(script), *base]) == 0
    out = capsys.readouterr().out
    assert "a;b" in out and str(sum(len(r) for r in wh.rows.values())) in out

    monkeypatch.setattr("sys.stdin", io.StringIO("SELECT 41 + 1 AS answer;"))
    assert cli_main(["sql", *base]) == 0
    assert "42" in capsys.readouterr().out

    # an error is one line naming the column, the rest goes to the log file; other statements still run
    assert cli_main(["sql", "SELECT nope FROM video_tags; SELECT 7 AS seven", *base]) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("vtag sql:")]
    assert len(errors) == 1 and "AnalysisException" in errors[0] and "`nope`" in errors[0], captured.err
    assert "JVM stacktrace" not in captured.err and "seven" in captured.out
    assert cli_main(["sql", "SELECT 1; SELECT 2", "--csv", str(tmp_path / "x.csv"), *base]) == 1
    assert "one statement" in capsys.readouterr().err
