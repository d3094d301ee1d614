"""``vtag query``: DuckDB over the tag tables, read by delta-rs as Arrow datasets — no Spark, no JVM.

The tables and views have the names ``vtag sql`` gives them (:mod:`vtag.jobs.warehouse.catalog`): ``video_tags``,
``video_tags_quarantine``, ``tag_runs``, ``video_tag_labels``, ``video_tags_latest`` (and
``video_uploads`` over a Parquet dump), bare or qualified with the catalog database (``vtag.``).

Each table is ``deltalake.DeltaTable(path).to_pyarrow_dataset()``: the files of the table's current
version, each fragment carrying its ``dt`` partition value. DuckDB pushes projections and filters
into the Arrow scan, so ``WHERE dt = DATE '2024-06-01'`` (or a range on ``dt``) opens only that
day's files; ``--files-read`` prints which data files a query opened. Time travel
(``VERSION AS OF``) is Spark's (``vtag sql``).

Read-only: once the tables and views are registered, :func:`open_warehouse` closes DuckDB to the
outside (``enable_external_access = false``, so no ``COPY``, ``read_csv``, ``ATTACH``, ``INSTALL``
or file access except the dump files under ``dump_root`` behind ``video_uploads``; no extension
auto-install or auto-load; ``lock_configuration = true``, so no ``SET`` undoes it). And
:func:`check_statement` accepts exactly one statement that reads (``SELECT``, ``WITH``, ``FROM``,
``VALUES``, ``PIVOT``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``, ``EXPLAIN`` of such a statement, a
``PRAGMA`` of :data:`READ_PRAGMAS`); anything else is refused before it runs. See
docs/analysts.md, "Read-only".

The result helpers here (:func:`format_table`, :func:`write_result`) are shared with ``vtag sql``,
so both commands print and save results the same way.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

import pyarrow as pa

from vtag.jobs.config import add_job_conf_args
from vtag.jobs.progress import one_line
from vtag.jobs.warehouse.catalog import (
    DUMP_TABLE,
    TABLE_NAMES,
    VIEWS,
    duck_string,
    short_database,
    upload_glob,
    view_sql,
)

DEFAULT_DISPLAY_ROWS = 100


#: ``PRAGMA`` names that only read (the catalog, sizes, versions); every other PRAGMA is refused
READ_PRAGMAS = frozenset({
    "show_tables", "show_tables_expanded", "show_databases", "table_info", "show", "database_list",
    "database_size", "storage_info", "metadata_info", "version", "platform", "user_agent", "functions",
    "collations",
})
#: what a refusal names as accepted
_ACCEPTED = "SELECT/WITH/FROM/VALUES/PIVOT, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN of those, or a read-only PRAGMA"


class QueryError(RuntimeError):
    """A warehouse cannot be opened or a query failed; the message says which and why."""


class RefusedStatement(QueryError):
    """The statement is not one read-only statement; nothing was run."""


def _arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--files-read", action="store_true", help="print the data files the query opened (stderr)")
    return p


def add_common_args(p: argparse.ArgumentParser, statements: bool = False) -> None:
    """The arguments ``vtag sql`` and ``vtag query`` share (``statements``: ``vtag sql``'s optional
    ``;``-separated statements and ``-f FILE``)."""
    if statements:
        p.add_argument("statement", nargs="?",
                       help='SQL statement(s), ";"-separated, e.g. "SELECT dt, count(*) FROM video_tags GROUP BY dt"; '
                            "none: an interactive shell on a terminal, else the statements on stdin")
        p.add_argument("-f", "--file", help="run the ;-separated statements of this .sql file")
    else:
        p.add_argument("statement", help='one SQL statement, e.g. "SELECT dt, count(*) FROM video_tags GROUP BY dt"')
    add_job_conf_args(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", metavar="OUT", help="write the result to this CSV file (nested values as JSON)")
    out.add_argument("--parquet", metavar="OUT", help="write the result to this Parquet file")
    p.add_argument("--limit", type=int, default=DEFAULT_DISPLAY_ROWS, help="rows to print (default %(default)s)")


# ------------------------------------------------------------------------------------ reading
def _counting_filesystem(root: str, opened: list[str]):
    """A local filesystem rooted at ``root`` that appends every opened file to ``opened``."""
    import pyarrow.fs as pafs

    class Counting(pafs.FileSystemHandler):
        def __init__(self, fs):
            self.fs = fs

        def __eq__(self, other):
            return isinstance(other, Counting) and other.fs.equals(self.fs)

        def __ne__(self, other):
            return not self == other

        def get_type_name(self):
            return "vtag-counting"

        def normalize_path(self, path):
            return self.fs.normalize_path(path)

        def get_file_info(self, paths):
            return self.fs.get_file_info(paths)

        def get_file_info_selector(self, selector):
            return self.fs.get_file_info(selector)

        def open_input_stream(self, path):
            opened.append(f"{root}/{path}")
            return self.fs.open_input_stream(path)

        def open_input_file(self, path):
            opened.append(f"{root}/{path}")
            return self.fs.open_input_file(path)

        def _read_only(self, *args, **kwargs):
            raise OSError("vtag query reads tables; it never writes them")

        create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = _read_only
        delete_file = move = copy_file = open_output_stream = open_append_stream = _read_only

    return pafs.PyFileSystem(Counting(pafs.SubTreeFileSystem(root, pafs.LocalFileSystem())))


def open_warehouse(conf: dict[str, Any], files_read: list[str] | None = None):
    """A DuckDB connection with the warehouse's tables and views (schema = the catalog database).

    ``files_read``: a list that receives the path of every data file a query opens (local warehouses).
    Tables missing from the warehouse are left out; a warehouse without ``video_tags`` is an error.
    """
    import duckdb
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    from vtag.jobs.warehouse.catalog import dump_root
    from vtag.jobs.warehouse.log_reads import delta_uri, storage_options
    from vtag.jobs.warehouse.tables import table_path

    db = short_database(conf)
    storage = storage_options(conf)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f'CREATE SCHEMA "{db}"')
        found = []
        for name in TABLE_NAMES:
            uri = delta_uri(table_path(conf, name))
            if not DeltaTable.is_deltatable(uri, storage_options=storage):
                continue
            local = "://" not in uri
            fs = _counting_filesystem(uri, files_read) if files_read is not None and local else None
            try:
                table = DeltaTable(uri, storage_options=storage)
                dataset = table.to_pyarrow_dataset(filesystem=fs) if fs is not None else table.to_pyarrow_dataset()
            except DeltaError as exc:
                raise QueryError(f"cannot read Delta table {name} at {uri}: {one_line(exc)}") from exc
            con.register(f"_delta_{name}", dataset)
            con.execute(f'CREATE VIEW "{db}".{name} AS SELECT * FROM _delta_{name}')
            found.append(name)
        if "video_tags" not in found:
            raise QueryError(f"no video_tags Delta table under warehouse {conf.get('warehouse')!r}")
        glob_ = upload_glob(conf)
        if glob_:
            source = f"read_parquet({duck_string(glob_)}, union_by_name = true)"
            con.execute(f'CREATE VIEW "{db}".{DUMP_TABLE} AS SELECT * FROM {source}')
        for view in VIEWS:
            if view == "video_uploads" and not glob_:
                continue
            con.execute(f'CREATE VIEW "{db}".{view} AS ' + view_sql(view, db, "duckdb", glob_))
        con.execute(f"SET search_path = '{db},main'")
        lock_down(con, [dump_root(conf)] if glob_ else [])
    except duckdb.Error as exc:
        con.close()
        raise QueryError(f"cannot open the warehouse in DuckDB: {type(exc).__name__}: {exc}") from exc
    except Exception:
        con.close()
        raise
    return con


def lock_down(con, readable_dirs: list[str]) -> None:
    """Close ``con`` to the outside once its tables are registered: no file, network or extension
    access (files under ``readable_dirs`` stay readable), and no setting can be changed afterwards."""
    if readable_dirs:
        dirs = ", ".join(duck_string(d.rstrip("/") + "/") for d in readable_dirs)
        con.execute(f"SET allowed_directories = [{dirs}]")
    for setting in (
        "autoinstall_known_extensions = false",
        "autoload_known_extensions = false",
        "allow_community_extensions = false",
        "enable_external_access = false",
        "lock_configuration = true",  # last: from here on no SET (nor PRAGMA x = y) is accepted
    ):
        con.execute(f"SET {setting}")


_COMMENT_OR_SPACE = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)", re.S)
_EXPLAIN = re.compile(r"\AEXPLAIN\s*(?:\([^()]*\)\s*)?(?:ANALY[SZ]E\b\s*)?", re.I)
_PRAGMA = re.compile(r"\APRAGMA\s+([A-Za-z_][A-Za-z0-9_]*)\s*(\(|;|\Z)", re.I)


def _strip_leading(sql: str) -> str:
    while True:
        m = _COMMENT_OR_SPACE.match(sql)
        if not m:
            return sql
        sql = sql[m.end():]


def _first_word(sql: str) -> str:
    m = re.match(r"[A-Za-z_]+", _strip_leading(sql))
    return m.group(0).upper() if m else "this"


def check_statement(con, statement: str) -> None:
    """Accept exactly one read-only statement; raise :class:`RefusedStatement` (nothing run) for an
    empty text, several statements, or a statement of any other kind (``COPY``, ``INSERT``,
    ``CREATE``, ``SET``, ``INSTALL``/``LOAD``, ``ATTACH``, ``CALL``, ``PRAGMA`` that is not in
    :data:`READ_PRAGMAS`, ``EXPLAIN ANALYZE`` of any of them, ...). DuckDB's own parser splits and
    classifies the text (``extract_statements``)."""
    import duckdb

    try:
        statements = con.extract_statements(statement)
    except duckdb.Error as exc:
        raise QueryError(f"{type(exc).__name__}: {exc}") from exc
    if not statements:
        raise RefusedStatement("no SQL statement given")
    if len(statements) > 1:
        kinds = ", ".join(_first_word(st.query) for st in statements)
        raise RefusedStatement(
            f"refused: {len(statements)} statements ({kinds}); vtag query runs exactly one read-only statement"
        )
    _check_read_only(con, statements[0], depth=0)


def _check_read_only(con, st, depth: int) -> None:
    import duckdb

    kind = st.type
    text = _strip_leading(st.query)
    if kind == duckdb.StatementType.SELECT:
        return
    if kind == duckdb.StatementType.PRAGMA:
        m = _PRAGMA.match(text)
        if m and m.group(1).lower() in READ_PRAGMAS:
            return
        name = m.group(1) if m else "this"
        raise RefusedStatement(
            f"refused: PRAGMA {name} is not a read-only PRAGMA (allowed: {', '.join(sorted(READ_PRAGMAS))}); "
            "vtag query is read-only"
        )
    if kind == duckdb.StatementType.EXPLAIN and depth == 0:
        m = _EXPLAIN.match(text)
        try:
            inner = con.extract_statements(text[m.end():]) if m else []
        except duckdb.Error:
            inner = []
        if len(inner) == 1:
            _check_read_only(con, inner[0], depth + 1)
            return
    what = _first_word(text)
    raise RefusedStatement(
        f"refused: {what} ({kind.name} statement) is not allowed; vtag query is read-only and runs one "
        f"{_ACCEPTED}"
    )


def run_query(con, statement: str) -> pa.Table:
    """Run one read-only statement (:func:`check_statement`; :class:`RefusedStatement` otherwise)."""
    import duckdb

    check_statement(con, statement)
    try:
        rel = con.sql(statement)
        if rel is None:
            return pa.table({})
        return rel.to_arrow_table()
    except duckdb.Error as exc:
        raise QueryError(f"{type(exc).__name__}: {exc}") from exc


def query(conf: dict[str, Any], statement: str, files_read: list[str] | None = None) -> pa.Table:
    """Open the warehouse, run ``statement``, close; the result as an Arrow table."""
    con = open_warehouse(conf, files_read)
    try:
        return run_query(con, statement)
    finally:
        con.close()


# ------------------------------------------------------------------------------------ results
def _is_nested(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_struct(t) or pa.types.is_map(t)


def _json_default(v: Any) -> str:
    return v.isoformat() if hasattr(v, "isoformat") else str(v)


def flatten_nested(table: pa.Table) -> pa.Table:
    """Nested columns (arrays, structs, maps) as JSON strings, the rest unchanged (for CSV and print)."""
    cols = []
    for col in table.columns:
        if _is_nested(col.type):
            values = [None if v is None else json.dumps(v, ensure_ascii=False, default=_json_default) for v in col.to_pylist()]
            col = pa.array(values, pa.string())
        cols.append(col)
    return pa.table(cols, names=table.column_names) if cols else table


def format_table(table: pa.Table, limit: int = DEFAULT_DISPLAY_ROWS) -> str:
    """A plain-text table of the first ``limit`` rows (wide Chinese characters aligned), and the row count."""
    import pandas as pd

    n = table.num_rows
    if table.num_columns == 0:
        return "(no result)"
    shown = flatten_nested(table.slice(0, max(0, limit)))
    frame = shown.to_pandas(types_mapper=pd.ArrowDtype)
    with pd.option_context(
        "display.unicode.east_asian_width", True,
        "display.max_columns", None,
        "display.width", 10_000,
        "display.max_colwidth", 80,
    ):
        body = frame.to_string(index=False) if n else "  ".join(table.column_names)
    more = f", {limit} shown" if n > limit else ""
    return f"{body}\n({n} row{'s' if n != 1 else ''}{more})"


def write_result(table: pa.Table, csv: str | None = None, parquet: str | None = None) -> str:
    """Write ``table`` to one CSV or Parquet file; returns the path."""
    if parquet:
        import pyarrow.parquet as pq

        pq.write_table(table, parquet)
        return parquet
    if csv:
        import pyarrow.csv as pacsv

        pacsv.write_csv(flatten_nested(table), csv)
        return csv
    raise ValueError("write_result needs csv or parquet")


def emit(table: pa.Table, args: argparse.Namespace) -> None:
    if args.csv or args.parquet:
        path = write_result(table, csv=args.csv, parquet=args.parquet)
        print(f"{table.num_rows} rows -> {path}", file=sys.stderr)
    else:
        print(format_table(table, args.limit))


def main(args: argparse.Namespace) -> int:
    from vtag.jobs.config import ConfigError, conf_from_args

    files: list[str] | None = [] if args.files_read else None
    try:
        conf = conf_from_args(args)
        result = query(conf, args.statement, files)
    except (QueryError, ConfigError, ValueError, OSError) as exc:
        print(f"vtag query: {exc}", file=sys.stderr)
        return 1
    emit(result, args)
    if files is not None:
        print(f"data files read: {len(files)}", file=sys.stderr)
        for f in files:
            print(f"  {f}", file=sys.stderr)
    return 0
