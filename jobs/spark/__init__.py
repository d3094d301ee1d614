"""Spark infrastructure shared by every Spark command:

- :mod:`jobs.spark.session` — the one session builder (Delta configured, local or cluster master), the
  warehouse path, Spark's log file;
- :mod:`jobs.spark.jars` — Delta's jars resolved once into the venv (``python -m jobs.spark.jars``);
- :mod:`jobs.spark.schema` — Spark schemas derived from the pyarrow schemas of ``models/schema.py``.
"""
