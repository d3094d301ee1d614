"""The packaged configuration (``vtag.conf``; find it with :func:`vtag.conf_dir`): job profiles
(``jobs/``), model configs (``model/``), the generator's knobs (``generate/``) and taxonomies
(``taxonomy/``). No code here: the package only makes the YAML files package data."""
