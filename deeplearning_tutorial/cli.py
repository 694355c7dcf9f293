"""Command lines for the tutorial functions, derived from their signatures.

``--learning-rate 0.1 --n-epochs 1 --nkerns 5 5`` map onto the keyword
arguments of ``evaluate_lenet5`` (or any other tutorial function): every
parameter with a default becomes an option of the same type, so the command
line can never drift from the function it runs.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from typing import Any, Callable, Sequence

from deeplearning_tutorial import speedups
from deeplearning_tutorial.datasets import DatasetError
from deeplearning_tutorial.training import DivergenceError


def parser_for(function: Callable, description: str | None = None) -> argparse.ArgumentParser:
    """An argument parser with one ``--option`` per defaulted parameter of ``function``."""
    parser = argparse.ArgumentParser(
        description=description or (function.__doc__ or "").strip().splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for name, parameter in inspect.signature(function).parameters.items():
        default = parameter.default
        if default is inspect.Parameter.empty:
            continue
        option = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(option, dest=name, action=argparse.BooleanOptionalAction,
                                default=default)
        elif isinstance(default, (list, tuple)):
            item_type = type(default[0]) if default else str
            if item_type in (list, tuple):  # pairs per layer: one int per layer (a square) on the command line
                item_type = type(default[0][0])
            parser.add_argument(option, dest=name, nargs="+", type=item_type, default=default,
                                metavar=name.upper())
        elif default is None and "tuple" in str(parameter.annotation):  # e.g. pool_strides: tuple | None
            parser.add_argument(option, dest=name, nargs="+", type=int, default=None, metavar=name.upper())
        elif default is None:
            parser.add_argument(option, dest=name, default=None)
        else:
            parser.add_argument(option, dest=name, type=type(default), default=default)
    return parser


def run(function: Callable, argv: Sequence[str] | None = None) -> Any:
    """Parse ``argv`` for ``function`` and call it, as a tutorial program's ``main``; known
    failures exit with a message.  Also keeps freed memory in the heap for the rest of the
    process (:func:`deeplearning_tutorial.speedups.keep_freed_memory`)."""
    arguments = parser_for(function).parse_args(argv)
    speedups.keep_freed_memory()
    try:
        return function(**vars(arguments))
    except (DatasetError, DivergenceError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
