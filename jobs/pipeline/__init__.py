"""The tagging pipeline and its jobs:

- stages: :mod:`vtag.jobs.pipeline.dumps` (read a day) -> :mod:`vtag.jobs.pipeline.validate` (quarantine) ->
  :mod:`vtag.jobs.pipeline.covers` -> :mod:`vtag.jobs.pipeline.inference` (``mapInArrow`` over ``Predictor``) ->
  :mod:`vtag.jobs.pipeline.publish` (write, audit, publish; locks and run markers in
  :mod:`vtag.jobs.pipeline.publish_guard`, table history and ``tag_runs`` rows in
  :mod:`vtag.jobs.pipeline.publish_state`, dead runs and ``--repair`` in
  :mod:`vtag.jobs.pipeline.publish_recovery`);
- jobs: :mod:`vtag.jobs.pipeline.tag` (``vtag tag``), :mod:`vtag.jobs.pipeline.retag` (``vtag retag``),
  :mod:`vtag.jobs.pipeline.profiles` + :mod:`vtag.jobs.pipeline.profile_sources` (``uploader_profiles``),
  :mod:`vtag.jobs.pipeline.quality` (the quality gate of a tagged day).

Imports :mod:`vtag.jobs.warehouse` and :mod:`vtag.jobs.spark`, never :mod:`vtag.jobs.analytics` or :mod:`vtag.jobs.cli`
(import-linter checks it).
"""
