"""The analysts' tools over the tag tables (read-only):

- :mod:`jobs.analytics.query` — ``vtag query``: DuckDB over the Delta tables, no Spark;
- :mod:`jobs.analytics.sql` + :mod:`jobs.analytics.sql_shell` — ``vtag sql``: Spark SQL, the shell;
- :mod:`jobs.analytics.report` (the queries) + :mod:`jobs.analytics.report_data` +
  :mod:`jobs.analytics.report_render` (charts, the page) — ``vtag report``.
"""
