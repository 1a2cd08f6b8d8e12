"""The ``drasp`` command line (Typer). Each command parses its options, calls one library
function and renders the result: data on stdout, messages on stderr.

Exit codes: 0 success; 1 an error the library reported (one line on stderr; set DRASP_DEBUG=1
for the traceback); 2 a usage error (Typer/Click's own).
"""

from __future__ import annotations

import os
import sys

import typer

from . import __version__

app = typer.Typer(
    name="drasp",
    help="Predict human opinion scores (MOS) of generated audio with DRASP pooling.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"drasp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Predict human opinion scores (MOS) of generated audio with DRASP pooling."""


@app.command()
def poolings() -> None:
    """List the pooling methods, one per line: name, output size, description."""
    from .pooling import POOLINGS

    for name, cls in POOLINGS.items():
        typer.echo(f"{name}\t{cls.summary}")


def _not_yet(command: str) -> None:
    from .errors import DraspError

    raise DraspError(f"`drasp {command}` is not implemented in drasp {__version__} yet (see the project's open issues)")


@app.command()
def score() -> None:
    """Score audio files and folders (per clip and per system). Not implemented yet."""
    _not_yet("score")


@app.command()
def train() -> None:
    """Train a MOS predictor on rated audio. Not implemented yet."""
    _not_yet("train")


@app.command(name="eval")
def evaluate() -> None:
    """Evaluate predictions against human ratings (clip and system level). Not implemented yet."""
    _not_yet("eval")


def main() -> None:
    """Entry point: run the app, turning library errors into one line on stderr."""
    from .errors import DraspError

    try:
        app()  # standalone mode: Typer handles --help, --version and usage errors (exit 2)
    except DraspError as e:
        if os.environ.get("DRASP_DEBUG") == "1":
            raise
        print(f"drasp: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
