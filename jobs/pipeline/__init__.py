"""The tagging pipeline and its jobs:

- stages: :mod:`jobs.pipeline.dumps` (read a day) -> :mod:`jobs.pipeline.validate` (quarantine) ->
  :mod:`jobs.pipeline.covers` -> :mod:`jobs.pipeline.inference` (``mapInArrow`` over ``Predictor``) ->
  :mod:`jobs.pipeline.publish` (write, audit, publish; locks and run markers in
  :mod:`jobs.pipeline.publish_guard`);
- jobs: :mod:`jobs.pipeline.tag` (``vtag tag``), :mod:`jobs.pipeline.retag` (``vtag retag``),
  :mod:`jobs.pipeline.profiles` + :mod:`jobs.pipeline.profile_sources` (``uploader_profiles``),
  :mod:`jobs.pipeline.quality` (the quality gate of a tagged day).

Imports :mod:`jobs.warehouse` and :mod:`jobs.spark`, never :mod:`jobs.analytics` or :mod:`jobs.cli`
(import-linter checks it).
"""
