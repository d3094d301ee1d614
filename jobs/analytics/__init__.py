"""The analysts' tools over the tag tables (read-only):

- :mod:`vtag.jobs.analytics.query` — ``vtag query``: DuckDB over the Delta tables, no Spark;
- :mod:`vtag.jobs.analytics.sql` + :mod:`vtag.jobs.analytics.sql_shell` — ``vtag sql``: Spark SQL, the shell;
- :mod:`vtag.jobs.analytics.report` (the queries) + :mod:`vtag.jobs.analytics.report_data` +
  :mod:`vtag.jobs.analytics.report_render` (charts, the page) — ``vtag report``.
"""
