"""The Delta tables under the warehouse root (no pipeline logic here):

- :mod:`jobs.warehouse.tables` — table definitions, creation, the partition write (``replace_day``),
  ``tag_runs`` appends, retries;
- :mod:`jobs.warehouse.table_docs` — the tables' schemas, partition columns and column comments;
- :mod:`jobs.warehouse.reasons` — the one list of quarantine reason codes;
- :mod:`jobs.warehouse.catalog` + :mod:`jobs.warehouse.metastore` — the tables, views and comments by
  name in a catalog (Spark's metastore, DuckDB's views);
- :mod:`jobs.warehouse.maintain` — ``vtag maintain``: OPTIMIZE / VACUUM.
"""
