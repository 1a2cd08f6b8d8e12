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
    """List the pooling methods, one per line: name, a tab, a description."""
    from .pooling import POOLINGS

    for name, cls in POOLINGS.items():
        typer.echo(f"{name}\t{cls.summary}")


@app.command()
def score(
    inputs: list[str] = typer.Argument(None, help="Audio files and folders (searched recursively)."),
    model: str = typer.Option(None, "--model", "-m", help="Checkpoint folder or Hub repo id (default: the shipped model)."),
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
    workers: int = typer.Option(None, help="Decoding threads [default: 1 on the CPU, all cores but one with a GPU]."),
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
    rank, world = _distributed(device)
    if world > 1:
        # torchrun: every rank scores its own shard; rank 0 merges and writes the results.
        shard, device = f"{rank}/{world}", (f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if device in ("auto", "cuda") and _cuda() else "cpu")
        shard_index, shard_count = rank, world
        quiet = quiet or rank > 0
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
    if log and world > 1:
        log = f"{log[: -len('.jsonl')]}.rank{rank}.jsonl"  # one resumable log per rank
    with _progress(quiet) as progress:
        report = run_scoring(mos, request, scorer, log_path=log, progress=_rate(progress))
    if world > 1:
        from .scoring import gather_reports

        report = gather_reports(report)
        if report is None:  # not rank 0: its results went to rank 0
            return
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


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _distributed(device: str) -> tuple[int, int]:
    """(rank, world size): joins the process group when started by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch

    from .training import init_distributed

    return init_distributed(torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"))


def _warn(message: str) -> None:
    print(f"drasp: {message}", file=sys.stderr)


def _load(model: str | None, revision: str | None):
    """The model named by --model, or the default one drasp ships."""
    from .checkpoint import load_model

    return load_model(model, revision=revision)


class _progress:
    """A Rich progress bar on stderr, or nothing with --quiet. Entering gives
    ``update(completed, total, note)``."""

    def __init__(self, quiet: bool, label: str = "scoring") -> None:
        self.quiet, self.label = quiet, label
        self.bar = None

    def __enter__(self):
        if self.quiet:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
            TimeRemainingColumn(), console=Console(stderr=True), transient=True,
        )
        self.bar.__enter__()
        self.task = self.bar.add_task(self.label, total=None, note="")

        def update(completed: int, total: int, note: str = "") -> None:
            self.bar.update(self.task, completed=completed, total=total, note=note)

        return update

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def _rate(update):
    """Adapt ``update`` to the scoring engine's ``progress(done, total, windows_per_s)``."""
    if update is None:
        return None
    return lambda done, total, rate: update(done, total, f"{rate:.1f} windows/s")


def _default_cache() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "drasp", "features")


@app.command()
def train(
    data: str = typer.Option(..., help="Labelled data: a manifest (CSV/JSONL), a MusicEval folder, or AES-Natural lists."),
    out: str = typer.Option(..., "--out", "-o", help="Folder for the best checkpoint, train_log.jsonl and resume state."),
    backbone: str = typer.Option("mel", help="mel, clap or aes."),
    pooling: str = typer.Option("drasp", help="Pooling method (see `drasp poolings`)."),
    segment_size: int = typer.Option(4, help="DRASP/segmental segment size, in the backbone's distinct frames."),
    recipe_name: str = typer.Option(None, "--recipe", help="clap, aes or mel (default: the backbone's)."),
    weights: str = typer.Option(None, help="Pretrained backbone weights: a local file, or REPO_ID:FILENAME[@REVISION]."),
    audio_root: str = typer.Option(None, help="Folder that replaces the placeholder at the start of AES-Natural data_path."),
    val_fraction: float = typer.Option(None, help="Hold out this fraction of systems (or tracks) for validation."),
    split_by: str = typer.Option("system", help="Validation split unit: system or track."),
    batch_size: int = typer.Option(None, help="Override the recipe's batch size."),
    lr: float = typer.Option(None, help="Override the recipe's learning rate."),
    optimizer: str = typer.Option(None, help="sgd or adamw."),
    loss: str = typer.Option(None, help="mae-sum or mae+mse."),
    epochs: int = typer.Option(None, "--epochs", help="Maximum number of epochs."),
    patience: int = typer.Option(None, help="Early-stopping patience in epochs."),
    seed: int = typer.Option(None, help="Random seed."),
    freeze_backbone: bool = typer.Option(None, "--freeze-backbone/--train-backbone", help="Freeze (and cache) or fine-tune the backbone."),
    cache_dir: str = typer.Option(None, help="Frame-feature cache for frozen backbones (default ~/.cache/drasp/features)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    workers: int = typer.Option(2, help="Decoding threads."),
    resume: bool = typer.Option(False, help="Continue an interrupted run in --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
) -> None:
    """Train a MOS predictor on rated audio (the paper's recipes, early stopping, resumable)."""
    from .data import load_dataset
    from .pooling import PoolingConfig
    from .training import model_config_for, recipe, train as train_model

    config = recipe(
        recipe_name or backbone, batch_size=batch_size, lr=lr, optimizer=optimizer, loss=loss, max_epochs=epochs,
        patience=patience, seed=seed, freeze_backbone=freeze_backbone,
    )
    dataset = load_dataset(data, audio_root=audio_root, val_fraction=val_fraction, split_by=split_by, seed=config.seed)
    model_config = model_config_for(backbone, dataset.axes, PoolingConfig(pooling, segment_size=segment_size), config, weights)
    say = (lambda m: None) if quiet else _warn
    with _progress(quiet, "training") as update:
        steps = None if update is None else (lambda epoch, step, n: update(step, n, f"epoch {epoch}"))
        result = train_model(
            dataset, model_config, config, out, device=device, resume=resume, cache_dir=cache_dir or _default_cache(),
            workers=workers, on_event=say, on_progress=steps,
        )
    say(f"best epoch {result.best_epoch} (validation loss {result.best_val_loss:.4f}); model in {result.out_dir}")


@app.command(name="eval")
def evaluate(
    data: str = typer.Option(..., help="Labelled data (as for `drasp train`)."),
    model: str = typer.Option(None, "--model", "-m", help="Checkpoint folder or Hub repo id to run."),
    scores: str = typer.Option(None, help="A saved `drasp score --format json` report to evaluate instead."),
    revision: str = typer.Option(None, help="Hub revision of --model."),
    split: str = typer.Option("test", help="Which split: train, val, test or all (test falls back to val when absent)."),
    audio_root: str = typer.Option(None, help="Folder that replaces the placeholder in AES-Natural data_path."),
    val_fraction: float = typer.Option(None, help="As for `drasp train`, to rebuild the same validation split."),
    split_by: str = typer.Option("system", help="As for `drasp train`."),
    seed: int = typer.Option(0, help="As for `drasp train`."),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
    plot: str = typer.Option(None, help="Write system-level scatter plots (PNG) into this folder."),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples for the SRCC interval (0: none)."),
    batch_size: int = typer.Option(8, help="Windows per forward pass."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr."),
) -> None:
    """Clip- and system-level MSE, LCC, SRCC, KTAU per axis against human ratings."""
    import json

    from .data import load_dataset
    from .errors import ConfigError
    from .metrics import evaluate_records
    from .report import plot_systems, read_baseline, render_eval

    if (model is None) == (scores is None):
        raise ConfigError("give exactly one of --model (run it) or --scores (a saved report)")
    if fmt not in ("table", "json"):
        raise ConfigError("--format must be table or json")
    dataset = load_dataset(data, audio_root=audio_root, val_fraction=val_fraction, split_by=split_by, seed=seed)
    name = split if split != "test" or dataset.test else "val"
    examples = dataset.split(name)
    if scores:
        report = read_baseline(scores)
        records, axes = report["clips"], tuple(report["axes"])
    else:
        from .scoring import Scorer, ScoreRequest, run_scoring

        mos = _load(model, revision)
        request = ScoreRequest(clips=[ex.clip for ex in examples], system_rule="none")
        with _progress(quiet) as progress:
            report = run_scoring(mos, request, Scorer(mos, batch_size=batch_size, device=device), progress=_rate(progress))
        records, axes = report["clips"], tuple(mos.config.axes)
    axes = tuple(a for a in axes if a in dataset.axes)
    if not axes:
        raise ConfigError(f"the predictions' axes do not match the data's ({', '.join(dataset.axes)})")
    result = evaluate_records(records, examples, axes, n_resamples=bootstrap)
    result["name"] = f"{dataset.name} ({name})"
    if fmt == "json":
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        from rich.console import Console

        render_eval(result, Console())
    if result["missing"] and not quiet:
        _warn(f"{len(result['missing'])} labelled clips have no prediction (failed or not in --scores)")
    if plot:
        for path in plot_systems(result, plot):
            if not quiet:
                _warn(f"wrote {path}")


@app.command()
def push(
    model_dir: str = typer.Argument(..., help="A checkpoint folder (config.json, model.safetensors, README.md)."),
    repo_id: str = typer.Argument(..., help="Hub repository, owner/name."),
    private: bool = typer.Option(False, help="Create the repository as private."),
    message: str = typer.Option("Upload drasp model", help="Commit message."),
) -> None:
    """Upload a checkpoint folder with its model card to the Hugging Face Hub."""
    from .checkpoint import push_checkpoint

    url = push_checkpoint(model_dir, repo_id, private=private, message=message)
    typer.echo(url)


def main() -> None:
    """Entry point: run the app, turning library errors into one line on stderr."""
    from .errors import DraspError
    from .runtime import tune_process

    tune_process()  # before torch loads: idle torch threads wait passively, leaving the cores to the decoders
    try:
        app()  # standalone mode: Typer handles --help, --version and usage errors (exit 2)
    except DraspError as e:
        if os.environ.get("DRASP_DEBUG") == "1":
            raise
        print(f"drasp: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
