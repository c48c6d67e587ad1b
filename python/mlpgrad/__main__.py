"""``python -m mlpgrad``: the command line (see ``mlpgrad.bench.main``)."""
import sys

from .bench import main

sys.exit(main())
