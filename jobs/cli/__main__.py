"""``python -m vtag.jobs.cli ...`` is ``vtag ...``."""

import sys

from vtag.jobs.cli.commands import main

sys.exit(main())
