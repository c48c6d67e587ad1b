"""``python -m mlpgrad``: the command line (see ``mlpgrad.cli``)."""
import sys

from .cli import main

sys.exit(main())
