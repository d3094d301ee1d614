"""``python -m jobs.cli ...`` is ``vtag ...``."""

import sys

from jobs.cli.commands import main

sys.exit(main())
