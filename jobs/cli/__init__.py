"""The ``vtag`` command line: :mod:`vtag.jobs.cli.commands` dispatches ``vtag <command>`` to the module
of :data:`COMMANDS`; the commands that exist only as commands live here too (:mod:`.taxonomy`,
:mod:`.evaluate`, :mod:`.catalog`, :mod:`.demo`). Importing this package imports no Spark and no torch.
"""

from vtag.jobs.cli.commands import COMMANDS, main

__all__ = ["COMMANDS", "main"]
