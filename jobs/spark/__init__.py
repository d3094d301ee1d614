"""Spark infrastructure shared by every Spark command:

- :mod:`vtag.jobs.spark.session` — the one session builder (Delta configured, local or cluster master), the
  warehouse path, Spark's log file;
- :mod:`vtag.jobs.spark.jars` — Delta's jars resolved once into the venv (``python -m vtag.jobs.spark.jars``);
- :mod:`vtag.jobs.spark.schema` — Spark schemas derived from the pyarrow schemas of ``models/schema.py``.
"""
