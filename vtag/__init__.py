"""vtag: hierarchical type tags for short user-generated videos.

The one import package of the distribution: :mod:`vtag.hierarchy` (the taxonomy), :mod:`vtag.models`
(PyTorch: the model, training, ``Predictor``), :mod:`vtag.jobs` (Spark: the jobs, the tables, the
``vtag`` command line) and :mod:`vtag.conf` (the packaged configuration: job profiles, model configs,
taxonomies). In the repository these are the top-level folders ``hierarchy/``, ``models/``, ``jobs/``
and ``conf/``, mapped into ``vtag`` by setup.cfg's ``package_dir``; the links in this folder mirror
that mapping for tools that walk a package's folder (import-linter). Importing ``vtag`` imports
neither Spark nor torch.
"""

from __future__ import annotations

from pathlib import Path


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vtag")
    except PackageNotFoundError:  # a checkout that was never installed
        return "0.0.0"


__version__ = _version()


def conf_dir() -> Path:
    """The packaged conf directory (``conf/`` of the checkout, ``vtag/conf`` of an installed wheel):
    ``jobs/*.yaml``, ``model/*.yaml``, ``generate/default.yaml``, ``taxonomy/*.yaml``."""
    from importlib.resources import files

    return Path(str(files("vtag.conf"))).resolve()


__all__ = ["__version__", "conf_dir"]
