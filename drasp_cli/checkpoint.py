"""drasp checkpoints: a folder with ``config.json`` + ``model.safetensors`` + ``README.md``.

This is the layout of ``huggingface_hub``'s ``PyTorchModelHubMixin``, so ``MosModel.from_pretrained``
and ``push_to_hub`` work on it; the folder can be local or a Hub repository. No pickle is read.
A frozen pretrained backbone is not copied into the checkpoint: its config records the source
(Hub repo, file, revision, SHA-256) and the weights are fetched from there when loading.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import __version__
from .errors import CheckpointError, ConfigError
from .hub import hub_file, resolve_weights, sha256_of
from .report import atomic_write, write_atomic

# The model drasp ships and uses when no --model is given (trained on the proxy benchmark).
DEFAULT_MODEL = Path(__file__).resolve().parent / "checkpoints" / "proxy-mel-drasp"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"


def write_checkpoint(model, directory: str | Path, card: dict[str, Any] | None = None) -> Path:
    """Save ``model`` as a checkpoint folder; returns the folder.

    ``card`` adds sections to the generated model card (e.g. ``{"data": ..., "metrics": ...}``);
    without it, what the model carries in ``model.card_info`` is used.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config
    source = config.backbone.source
    if source is not None and source.sha256 is None and not config.backbone.trainable:
        # Pin the exact pretrained file a frozen backbone comes from: loading checks it.
        digest = sha256_of(resolve_weights(source))
        config = replace(config, backbone=replace(config.backbone, source=replace(source, sha256=digest)))
        model.config = config
    state = {k: v.detach().cpu().contiguous() for k, v in model.checkpoint_state().items()}
    meta = {"format": "pt", "drasp_version": __version__, "format_version": str(config.format_version)}
    atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata=meta))
    text = json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"
    write_atomic(directory / CONFIG_NAME, text)
    info = card if card is not None else getattr(model, "card_info", None) or {}
    card_text = model_card(model, info)
    write_atomic(directory / CARD_NAME, card_text)
    return directory


def _checkpoint_files(name_or_path: str | Path, revision: str | None) -> tuple[Path, Path]:
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        config_path, weights_path = path / CONFIG_NAME, path / WEIGHTS_NAME
        for p in (config_path, weights_path):
            if not p.is_file():
                raise CheckpointError(f"{path}: not a drasp checkpoint folder ({p.name} is missing)")
        return config_path, weights_path
    text = str(name_or_path)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise CheckpointError(f"{text}: no checkpoint folder there, and it is not a Hub repo id (owner/name)")
    return hub_file(text, CONFIG_NAME, revision), hub_file(text, WEIGHTS_NAME, revision)


def read_config(config_path: Path):
    """Parse a checkpoint's ``config.json`` strictly (unknown keys are errors)."""
    from .model import ModelConfig

    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{config_path}: not a readable JSON config ({e})") from None
    try:
        return ModelConfig.from_dict(data)
    except ConfigError as e:
        raise CheckpointError(f"{config_path}: {e}") from None


def read_checkpoint(name_or_path: str | Path, revision: str | None = None, device: str = "cpu"):
    """Load a checkpoint folder (local, or a Hub repo id) into an eval-mode :class:`MosModel`.

    Raises :class:`CheckpointError` when a file is missing, the config has unknown keys, or the
    weights do not match the network the config describes.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .model import MosModel

    config_path, weights_path = _checkpoint_files(name_or_path, revision)
    config = read_config(config_path)
    try:
        model = MosModel(config)
    except ConfigError as e:
        raise CheckpointError(f"{config_path}: {e}") from None
    stored_backbone = config.backbone.trainable or config.backbone.source is None
    model.backbone.load(pretrained=not stored_backbone)
    try:
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({e})") from None
    expected = model.checkpoint_state()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = sorted(k for k in set(expected) & set(weights) if tuple(expected[k].shape) != tuple(weights[k].shape))
    if missing or unexpected or wrong:
        what = f"backbone {config.backbone.name!r}, pooling {config.pooling.method!r}"
        parts = [f"{label} {len(keys)} ({', '.join(keys[:3])}{', …' if len(keys) > 3 else ''})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise CheckpointError(f"{weights_path}: weights do not match {config_path.name} ({what}): " + "; ".join(parts))
    model.load_state_dict(weights, strict=False)
    model.checkpoint_source = str(name_or_path)
    model.checkpoint_revision = revision
    return model.to(device).eval()


def load_model(name_or_path: str | Path | None = None, revision: str | None = None, device: str = "cpu"):
    """Load a drasp model from a checkpoint folder or a Hugging Face Hub repo id; with no name,
    the default model that ships with drasp (:data:`DEFAULT_MODEL`).

    >>> import tempfile
    >>> from drasp_cli.model import MosModel, ModelConfig
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = save_model(MosModel(ModelConfig()), d)
    ...     load_model(d).config.axes
    ('MOS',)
    """
    if name_or_path is None:
        if not (DEFAULT_MODEL / CONFIG_NAME).is_file():
            raise CheckpointError(f"the default model is missing from this installation ({DEFAULT_MODEL}); pass --model")
        name_or_path = DEFAULT_MODEL
    return read_checkpoint(name_or_path, revision=revision, device=device)


def save_model(model, directory: str | Path, card: dict[str, Any] | None = None) -> Path:
    """Save a model as a checkpoint folder (``config.json``, ``model.safetensors``, ``README.md``)."""
    if card is not None:
        model.card_info = card
    model.save_pretrained(directory)
    return Path(directory)


def model_card(model, info: dict[str, Any]) -> str:
    """A Markdown model card (with Hub metadata) describing what the model predicts and how."""
    c = model.config
    bb = c.backbone
    source = bb.source
    if source is None:
        weights = "trained from scratch; all weights are in `model.safetensors`"
    else:
        where = source.path or f"{source.repo_id}/{source.filename}" + (f"@{source.revision}" if source.revision else "")
        how = "fine-tuned (weights in `model.safetensors`)" if bb.trainable else "frozen (not copied; fetched from the source)"
        weights = f"`{where}`" + (f" (SHA-256 `{source.sha256}`)" if source.sha256 else "") + f", {how}"
    lines = [
        "---",
        "library_name: drasp",
        "tags: [audio, mos-prediction, drasp]",
        "pipeline_tag: audio-classification",
        "---",
        "",
        f"# {info.get('title', 'drasp MOS predictor')}",
        "",
        info.get("summary", "Predicts mean opinion scores of audio clips."),
        "",
        "## Model",
        "",
        f"- Outputs: {', '.join(c.axes)}" + (f" (with the text prompt: {', '.join(c.text_axes)})" if c.text_axes else ""),
        f"- Backbone: `{bb.name}`" + (f" ({bb.variant})" if bb.variant else "") + f"; weights: {weights}",
        f"- Pooling: `{c.pooling.method}`"
        + (f", segments of {c.pooling.segment_size} frames = {model.segment_seconds:.3f} s" if "segment" in c.pooling.method or c.pooling.method == "drasp" else ""),
        f"- Head: {c.head}" + (f" {' -> '.join(map(str, c.head_hidden))} -> 1" if c.head == "mlp" else ""),
        f"- Made with drasp {__version__} (checkpoint format {c.format_version})",
        "",
        "## Use",
        "",
        "```bash",
        "drasp score ./clips --model PATH_OR_REPO_ID",
        "```",
    ]
    for title, body in info.items():
        if title in ("title", "summary"):
            continue
        lines += ["", f"## {title.replace('_', ' ').capitalize()}", ""]
        if isinstance(body, dict):
            lines += [f"- {k}: {v}" for k, v in body.items()]
        else:
            lines.append(str(body))
    return "\n".join(lines) + "\n"


def push_checkpoint(model_dir: str | Path, repo_id: str, private: bool = False, message: str = "Upload drasp model") -> str:
    """Upload a checkpoint folder's ``config.json``, ``model.safetensors`` and ``README.md`` to
    a Hub model repository (created if needed); returns the commit URL.

    The folder is checked first: it must load as a drasp model's config, so a broken or foreign
    folder is never uploaded.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(model_dir)
    config_path, _ = _checkpoint_files(folder, None) if folder.is_dir() else (None, None)
    if config_path is None:
        raise CheckpointError(f"{folder}: not a checkpoint folder")
    read_config(config_path)
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME],
            commit_message=message,
        )
    except HfHubHTTPError as e:
        raise CheckpointError(f"{repo_id}: upload failed ({e}); check `hf auth login` and the repo name") from None
    except OSError as e:
        raise CheckpointError(f"{repo_id}: the Hub cannot be reached ({e})") from None
    return str(getattr(info, "commit_url", info))
