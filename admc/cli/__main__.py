"""``python -m admc.cli``: the ``admc`` command."""

import sys

from admc.cli.commands import main

sys.exit(main())
