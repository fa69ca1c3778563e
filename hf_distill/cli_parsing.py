"""Command-line + YAML parsing straight into config dataclasses, for the `hf-distill` subcommands.

Each option is a dataclass field (its ``metadata["help"]`` is the ``--help`` text), parsed by TRL's
``TrlParser`` as TRL's own scripts do: ``--config file.yaml`` sets values, command-line flags override them.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from typing import Any

CONFIG_FILE_HELP = (
    "Every option can also come from a YAML file: --config file.yaml, with the option names as keys "
    "(underscores, e.g. max_new_tokens: 64); flags given on the command line override the file."
)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's example commands as written and shows each option's default."""


def dataclass_parser(types: Sequence[type], prog: str, description: str) -> Any:
    """A ``TrlParser`` over ``types`` whose ``--help`` shows ``description`` and how to use ``--config``."""
    from trl import TrlParser

    return TrlParser(
        list(types),
        prog=prog,
        description=f"{description.strip()}\n\n{textwrap.fill(CONFIG_FILE_HELP, 110)}",
        formatter_class=_HelpFormatter,
    )


def parse_dataclasses(types: Sequence[type], argv: Sequence[str] | None, prog: str, description: str) -> tuple:
    """One instance per dataclass in ``types``, from ``argv`` (default ``sys.argv[1:]``) and any ``--config``."""
    return tuple(dataclass_parser(types, prog, description).parse_args_and_config(argv))
