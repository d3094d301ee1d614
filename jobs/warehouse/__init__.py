"""The Delta tables under the warehouse root (no pipeline logic here):

- :mod:`vtag.jobs.warehouse.tables` — table definitions, creation, the partition write (``replace_day``),
  ``tag_runs`` appends, retries;
- :mod:`vtag.jobs.warehouse.table_docs` — the tables' schemas, partition columns and column comments;
- :mod:`vtag.jobs.warehouse.reasons` — the one list of quarantine reason codes;
- :mod:`vtag.jobs.warehouse.catalog` + :mod:`vtag.jobs.warehouse.metastore` — the tables, views and comments by
  name in a catalog (Spark's metastore, DuckDB's views);
- :mod:`vtag.jobs.warehouse.maintain` — ``vtag maintain``: OPTIMIZE / VACUUM.
"""
