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
def score(
    inputs: list[str] = typer.Argument(None, help="Audio files and folders (searched recursively)."),
    model: str = typer.Option(None, "--model", "-m", help="Checkpoint folder or Hugging Face Hub repo id."),
    revision: str = typer.Option(None, help="Hub revision (branch, tag or commit) of --model."),
    manifest: str = typer.Option(None, help="CSV or JSONL with path and optional system, prompt, start, end."),
    systems: str = typer.Option("auto", help="How clips get a system: auto, map, folder, name, none."),
    system_map: str = typer.Option(None, help="CSV mapping file name, relative path or glob to a system."),
    system_pattern: str = typer.Option(None, help="Regex on the file name; its first group names the system."),
    prompts: str = typer.Option(None, help="CSV mapping file name, relative path or glob to a text prompt."),
    fmt: str = typer.Option("table", "--format", "-f", help="stdout format: table, csv, json, jsonl."),
    output: str = typer.Option(None, "--output", "-o", help="Also write the report here (.json, .csv; .jsonl resumes)."),
    segments: bool = typer.Option(False, help="Per clip: window scores and attention per segment."),
    batch_size: int = typer.Option(8, help="Windows per forward pass."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    precision: str = typer.Option("fp32", help="fp32, or bf16 on CUDA."),
    workers: int = typer.Option(1, help="Decoding threads."),
    shard: str = typer.Option("0/1", help="INDEX/COUNT: score every COUNT-th file from INDEX."),
    fail_under: list[str] = typer.Option(None, help="AXIS=VALUE: fail when a system's mean is below VALUE."),
    baseline: str = typer.Option(None, help="A previous --format json report to compare with."),
    max_drop: list[str] = typer.Option(None, help="AXIS=DELTA: fail when a system fell by more than DELTA."),
    strict: bool = typer.Option(False, help="Stop at the first input that cannot be scored."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or warnings on stderr."),
) -> None:
    """Score audio files and folders: per-clip and per-system tables, JSON for CI, a quality gate.

    Exit codes: 0 ok; 1 nothing could run; 2 usage error; 3 some inputs failed; 4 the gate failed.
    """
    from . import errors
    from .report import FORMATS, check_gate, parse_thresholds, read_baseline, render, render_tables, write_atomic
    from .scoring import Scorer, ScoreRequest, run_scoring

    if fmt not in FORMATS:
        raise errors.ConfigError(f"--format must be one of {', '.join(FORMATS)}")
    try:
        shard_index, shard_count = (int(x) for x in shard.split("/"))
    except ValueError:
        raise errors.ConfigError(f"--shard {shard!r}: expected INDEX/COUNT, e.g. 0/4") from None
    floors = parse_thresholds(fail_under or [], "--fail-under")
    drops = parse_thresholds(max_drop or [], "--max-drop")
    if drops and not baseline:
        raise errors.ConfigError("--max-drop needs --baseline")
    base = read_baseline(baseline) if baseline else None
    mos = _load(model, revision)
    scorer = Scorer(mos, batch_size=batch_size, device=device, precision=precision, workers=workers, segments=segments)
    request = ScoreRequest(
        inputs=list(inputs or []),
        manifest=manifest,
        system_rule=systems,
        system_map=system_map,
        system_pattern=system_pattern,
        prompts=prompts,
        shard=(shard_index, shard_count),
        strict=strict,
    )
    log = output if output and output.endswith(".jsonl") else None
    with _progress(quiet) as progress:
        report = run_scoring(mos, request, scorer, log_path=log, progress=progress)
    if output and not log:
        out_fmt = "csv" if output.endswith(".csv") else "json"
        write_atomic(output, render(report, out_fmt))
    if fmt == "table":
        from rich.console import Console

        render_tables(report, Console(soft_wrap=False))
    else:
        sys.stdout.write(render(report, fmt))
    gate = check_gate(report, floors, base, drops)
    if not quiet:
        for path in report["unassigned"]:
            _warn(f"{path}: no system rule matched; left out of the system table")
        for note in report["notes"]:
            _warn(note)
        for line in gate:
            _warn(f"gate failed: {line}")
    s = report["summary"]
    if not quiet:
        _warn(f"{s['scored']} scored, {s['failed']} failed, {s['flagged']} flagged, {s['unassigned']} without a system")
    if s["scored"] == 0:
        raise errors.DraspError(f"no input could be scored ({s['failed']} failed)")
    if gate:
        raise typer.Exit(errors.EXIT_GATE_FAILED)
    if s["failed"]:
        raise typer.Exit(errors.EXIT_INPUTS_FAILED)


def _warn(message: str) -> None:
    print(f"drasp: {message}", file=sys.stderr)


def _load(model: str | None, revision: str | None):
    from .checkpoint import load_model
    from .errors import ConfigError

    if model is None:
        raise ConfigError("no --model given and no default model ships with this drasp version yet")
    return load_model(model, revision=revision)


class _progress:
    """A Rich progress bar on stderr (files, clips/s, ETA), or nothing with --quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None

    def __enter__(self):
        if self.quiet:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
            console=Console(stderr=True), transient=True,
        )
        self.bar.__enter__()
        self.task = self.bar.add_task("scoring", total=None, rate="")

        def update(done: int, total: int, windows_per_s: float) -> None:
            self.bar.update(self.task, completed=done, total=total, rate=f"{windows_per_s:.1f} windows/s")

        return update

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


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
