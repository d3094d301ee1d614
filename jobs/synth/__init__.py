"""Synthetic UGC dump generation: ``vtag generate`` (:mod:`vtag.jobs.synth.generate`, the Spark job), see
docs/generator.md.

One concern per module, all pure Python + numpy + Pillow (no Spark import in them, so the Python
workers of the Spark job import only what they need; :mod:`vtag.jobs.synth.generate` is the driver side):

- :mod:`vtag.jobs.synth.config`   — the generator knobs (``conf/generate/*.yaml``) and their hash;
- :mod:`vtag.jobs.synth.shared`   — optional real-data seeds read from ``../shared/data`` (never copied);
- :mod:`vtag.jobs.synth.lexicon`  — per-node lexicons derived from any taxonomy (+ curated extras);
- :mod:`vtag.jobs.synth.world`    — everything fixed for a (taxonomy, config, seed): leaf frequencies,
  sibling sets, uploaders, programs, cover signatures;
- :mod:`vtag.jobs.synth.text`     — UGC titles and descriptions;
- :mod:`vtag.jobs.synth.cover`    — JPEG covers rendered with Pillow;
- :mod:`vtag.jobs.synth.context`  — uploaders, source programs, durations, upload times;
- :mod:`vtag.jobs.synth.labels`   — primary leaf, label noise, constraint-consistent extra tags;
- :mod:`vtag.jobs.synth.bad`      — the bad-row plan and the bad-row mutations;
- :mod:`vtag.jobs.synth.rows`     — one partition's rows as Arrow record batches or JSON lines.
"""
