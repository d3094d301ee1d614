"""Synthetic UGC dump generation: ``vtag generate`` (:mod:`jobs.synth.generate`, the Spark job), see
docs/generator.md.

One concern per module, all pure Python + numpy + Pillow (no Spark import in them, so the Python
workers of the Spark job import only what they need; :mod:`jobs.synth.generate` is the driver side):

- :mod:`jobs.synth.config`   — the generator knobs (``conf/generate/*.yaml``) and their hash;
- :mod:`jobs.synth.shared`   — optional real-data seeds read from ``../shared/data`` (never copied);
- :mod:`jobs.synth.lexicon`  — per-node lexicons derived from any taxonomy (+ curated extras);
- :mod:`jobs.synth.world`    — everything fixed for a (taxonomy, config, seed): leaf frequencies,
  sibling sets, uploaders, programs, cover signatures;
- :mod:`jobs.synth.text`     — UGC titles and descriptions;
- :mod:`jobs.synth.cover`    — JPEG covers rendered with Pillow;
- :mod:`jobs.synth.context`  — uploaders, source programs, durations, upload times;
- :mod:`jobs.synth.labels`   — primary leaf, label noise, constraint-consistent extra tags;
- :mod:`jobs.synth.bad`      — the bad-row plan and the bad-row mutations;
- :mod:`jobs.synth.rows`     — one partition's rows as Arrow record batches or JSON lines.
"""
