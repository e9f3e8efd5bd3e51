"""The Typer app every command registers on, its error handling, and shared option helpers.

Every command runs inside :class:`HogwildGroup`, which turns a :class:`HogwildError` into
``error: <message>`` on stderr with exit code 2 (no traceback) and Ctrl-C into exit code 130.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

import click
import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from ..errors import HogwildError, InvalidRequestError

#: exit code for errors the user caused (same as a usage error)
EXIT_USER_ERROR = 2
#: exit code after Ctrl-C (128 + SIGINT)
EXIT_INTERRUPTED = 130


def print_error(message: str) -> None:
    Console(stderr=True, highlight=False).print(Text(f"error: {message}", style="bold red"), soft_wrap=True)


class HogwildGroup(TyperGroup):
    """Runs a subcommand; user errors become ``error: ...`` and exit 2, Ctrl-C exits 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HogwildError as error:
            print_error(str(error))
            raise typer.Exit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt:
            Console(stderr=True).print(Text("interrupted", style="yellow"))
            raise typer.Exit(EXIT_INTERRUPTED) from None


app = typer.Typer(
    cls=HogwildGroup,
    name="hogwild",
    help="Parallel collaborative LLM inference: N workers of one model share one KV cache.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def main() -> None:
    """Entry point of the ``hogwild`` script (``hogwild.cli`` imports every command first)."""
    app()


def _use_plain(plain: Optional[bool]) -> bool:
    """--plain / --live as given; by default plain unless stdout is a terminal."""
    if plain is not None:
        return plain
    return not sys.stdout.isatty()


def _set_threads(threads: Optional[int]) -> None:
    if threads is None:
        return
    if threads < 1:
        raise InvalidRequestError(f"--threads must be at least 1 (got {threads})")
    import torch

    torch.set_num_threads(threads)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise InvalidRequestError(f"{what}: expected numbers separated by commas, got {text!r}") from None
    if not values:
        raise InvalidRequestError(f"{what}: give at least one number")
    return values
