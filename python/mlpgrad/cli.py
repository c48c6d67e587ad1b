"""``python -m mlpgrad COMMAND [options]``: the command root.

It names the commands and dispatches to the module of each, which keeps the command's own options and work:
``DESCRIPTION`` (and ``EPILOG``), ``add_arguments(parser)`` and ``run_command(args) -> int`` (``args.parser``
is the command's parser, for its errors).  Building the parser imports those modules but none of their optional
dependencies (scikit-learn, dask, torch, jax, matplotlib): each imports them when its command runs.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Optional, Sequence

__all__ = ["COMMANDS", "build_parser", "main"]

# command -> (module in this package, one-line help)
COMMANDS = {
    "bench": ("bench", "time the native core against the NumPy reference, torch and jax"),
    "demo": ("demo", "mlpgrad.MLPClassifier vs scikit-learn's MLPClassifier(logistic): fit time and accuracy"),
    "bench-dask": ("_bench_dask", "gradient evaluations per second on local Dask clusters of 1 and 2 workers"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlpgrad",
        description="mlpgrad command line: exact losses and gradients of sigmoid MLPs.")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name, (module_name, help_line) in COMMANDS.items():
        module = importlib.import_module(f".{module_name}", __package__)
        p = sub.add_parser(name, help=help_line, description=module.DESCRIPTION,
                           epilog=getattr(module, "EPILOG", None),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(run_command=module.run_command, parser=p)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m mlpgrad COMMAND ...``: the command's exit status; with no command, print the usage."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run_command"):
        parser.print_help()
        return 0
    return args.run_command(args)
