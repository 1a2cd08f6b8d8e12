"""Training: the paper's two recipes, early stopping, a per-epoch log, resumable state,
a frame-feature cache for frozen backbones, and data-parallel training under torchrun.

No argument parsing here: ``cli.train`` builds a :class:`TrainConfig` and calls :func:`fit`.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .backbones.base import Frames
from .config import config_to_dict
from .errors import ConfigError, DataError, DraspError
from .report import atomic_write, write_atomic

LOG_NAME = "train_log.jsonl"
STATE_DIR = "resume"


@dataclass(frozen=True)
class TrainConfig:
    """How to train; the recipes below are the paper's two setups plus one for ``mel``."""

    recipe: str = "mel"  # the preset these values started from
    batch_size: int = 16  # clips per optimiser step (over all processes)
    optimizer: str = "adamw"  # "sgd" or "adamw"
    lr: float = 1e-3
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    loss: str = "mae+mse"  # "mae-sum" (sum of per-axis MAE) or "mae+mse" (per axis, summed)
    max_epochs: int = 1000
    patience: int = 20  # early stopping: epochs without a lower validation loss
    seed: int = 0
    freeze_backbone: bool = False  # frozen: features are computed once and cached
    standardize_labels: bool = True  # train on (label - mean) / std of the training labels
    cache_features: bool = True  # frozen backbones: keep frame features on disk between runs

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.loss not in ("mae-sum", "mae+mse"):
            raise ConfigError(f"loss must be mae-sum or mae+mse, got {self.loss!r}")
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1 or not self.lr > 0:
            raise ConfigError("batch_size, max_epochs and patience must be at least 1 and lr positive")


RECIPES: dict[str, TrainConfig] = {
    # MusicEval / DRASP with CLAP: batch 64, SGD lr 5e-4 momentum 0.9, sum of the heads' MAEs,
    # backbone fine-tuned, labels on their own scale (the reference code).
    "clap": TrainConfig("clap", 64, "sgd", 5e-4, 0.9, 0.0, "mae-sum", 1000, 20, 0, False, False),
    # AudioBox-Aesthetics: batch 32, AdamW lr 1e-4, MAE + MSE, encoder frozen, labels standardised.
    "aes": TrainConfig("aes", 32, "adamw", 1e-4, 0.9, 0.0, "mae+mse", 1000, 20, 0, True, True),
    # The light offline backbone, trained from scratch.
    "mel": TrainConfig("mel", 16, "adamw", 1e-3, 0.9, 0.0, "mae+mse", 200, 20, 0, False, True),
}


def recipe(name: str, **overrides: Any) -> TrainConfig:
    """A recipe with some values changed (``None`` values are ignored)."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose {', '.join(RECIPES)}")
    return replace(RECIPES[name], **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class TrainResult:
    out_dir: Path
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    history: list[dict[str, Any]]


# -- distributed ---------------------------------------------------------------------------------


def dist_info() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torchrun."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        # Leave the group before the interpreter ends: a group still alive at exit aborts the
        # process now and then ("terminate called without an active exception", SIGABRT).
        atexit.register(_leave_distributed)
    return dist_info()


def _leave_distributed() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# -- data ---------------------------------------------------------------------------------------------


@dataclass
class _Item:
    """One example's model input: raw windows (trainable backbone) or cached frames (frozen)."""

    labels: np.ndarray  # (A,) NaN where an axis has no label
    system: str | None
    prompt: str | None
    windows: np.ndarray | None = None  # (W, N) float32
    lengths: np.ndarray | None = None  # (W,)
    features: Any = None  # (W, T, D) fp16 tensor, or a dict of them per stream
    mask: torch.Tensor | None = None  # (W, T)


def _decode(backbone, examples, workers: int, on_event: Callable[[str], None]) -> list[tuple[np.ndarray, np.ndarray] | None]:
    from .scoring import clip_windows

    def one(example):
        try:
            parts = list(clip_windows(backbone, example.clip))
        except DraspError as e:
            on_event(f"skipped: {e}")
            return None
        return np.stack([p[0] for p in parts]), np.array([p[1] for p in parts], dtype=np.int64)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(one, examples))


def _backbone_key(model) -> str:
    bb = model.config.backbone
    src = bb.source
    return json.dumps(
        {"name": bb.name, "variant": bb.variant, "options": bb.options, "source": config_to_dict(src) if src else None,
         "weights": getattr(model.backbone, "weights_sha256", None)},
        sort_keys=True,
    )


def _cache_key(example, backbone_key: str) -> str:
    import hashlib

    from .hub import sha256_of

    clip = example.clip
    h = hashlib.sha256()
    h.update(sha256_of(Path(clip.path)).encode())
    h.update(f"|{clip.start}|{clip.end}|{backbone_key}".encode())
    return h.hexdigest()


def _encode_items(model, items: list[_Item], device, batch_windows: int) -> None:
    """Replace each item's windows by its frozen backbone's frames (fp16, on the CPU)."""
    bb = model.backbone
    with torch.inference_mode():
        for item in items:
            feats, masks = [], []
            for i in range(0, len(item.windows), batch_windows):
                w = torch.from_numpy(item.windows[i : i + batch_windows]).to(device)
                n = torch.from_numpy(item.lengths[i : i + batch_windows]).to(device)
                f, m = bb.encode(w, n)
                feats.append({k: v.half().cpu() for k, v in f.items()} if isinstance(f, dict) else f.half().cpu())
                masks.append(m.cpu())
            item.features = {k: torch.cat([f[k] for f in feats]) for k in feats[0]} if isinstance(feats[0], dict) else torch.cat(feats)
            item.mask = torch.cat(masks)
            item.windows = None


def _load_cached(items, keys, cache_dir: Path) -> list[int]:
    """Fill items from the cache; returns the indices still to compute."""
    from safetensors.torch import load_file

    todo = []
    for i, (item, key) in enumerate(zip(items, keys)):
        path = cache_dir / f"{key}.safetensors"
        if not path.exists():
            todo.append(i)
            continue
        t = load_file(str(path))
        item.mask = t.pop("mask").bool()
        item.lengths = t.pop("lengths").numpy()
        item.features = t["features"] if "features" in t else {k.split(".", 1)[1]: v for k, v in t.items()}
        item.windows = None
    return todo


def _save_cached(item: _Item, key: str, cache_dir: Path) -> None:
    from safetensors.torch import save_file

    feats = {"features": item.features} if torch.is_tensor(item.features) else {f"features.{k}": v for k, v in item.features.items()}
    tensors = {**feats, "mask": item.mask.to(torch.uint8), "lengths": torch.from_numpy(item.lengths)}
    atomic_write(cache_dir / f"{key}.safetensors", lambda p: save_file(tensors, str(p)))


def prepare_items(model, examples, config: TrainConfig, device, cache_dir: str | None, workers: int, on_event) -> list[_Item]:
    """Decode examples into model inputs; for a frozen backbone, compute (or read cached) frames."""
    axes = model.config.axes
    items = [
        _Item(np.array([ex.labels.get(a, math.nan) for a in axes], dtype=np.float64), ex.clip.system, ex.clip.prompt)
        for ex in examples
    ]
    keys: list[str] = []
    todo = list(range(len(items)))
    use_cache = config.freeze_backbone and config.cache_features and cache_dir is not None
    if use_cache:
        cache = Path(cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        bkey = _backbone_key(model)
        keys = [_cache_key(ex, bkey) for ex in examples]
        todo = _load_cached(items, keys, cache)
    decoded = _decode(model.backbone, [examples[i] for i in todo], workers, on_event)
    for i, d in zip(todo, decoded):
        if d is not None:
            items[i].windows, items[i].lengths = d
    ready = [i for i in todo if items[i].windows is not None]
    if config.freeze_backbone and ready:
        bb = model.backbone
        per_window = bb.frames_per_window * bb.feature_dim * 2 * len(bb.streams or (None,))
        total = sum(len(items[i].windows) for i in ready) * per_window
        where = f"in {cache_dir}" if use_cache else "in memory"
        on_event(f"computing frozen {bb.name} frame features for {len(ready)} clips: {total / 1e6:.1f} MB {where} (fp16)")
        _encode_items(model, [items[i] for i in ready], device, batch_windows=16)
        if use_cache:
            for i in ready:
                _save_cached(items[i], keys[i], Path(cache_dir))
    return [it for it in items if it.windows is not None or it.features is not None]


def _collate(model, batch: list[_Item], device, train_backbone: bool) -> tuple[Frames, dict[str, torch.Tensor]]:
    """Pad a batch of clips to the same number of windows and build its :class:`Frames`."""
    bb = model.backbone
    if batch[0].features is None:
        with torch.set_grad_enabled(train_backbone and torch.is_grad_enabled()):
            frames = bb.encode_clips([(it.windows, it.lengths) for it in batch])
    else:
        n_windows = max(len(it.lengths) for it in batch)
        lengths = np.zeros((len(batch), n_windows), dtype=np.int64)
        for i, it in enumerate(batch):
            lengths[i, : len(it.lengths)] = it.lengths

        def pad(x: torch.Tensor) -> torch.Tensor:
            out = x.new_zeros((n_windows, *x.shape[1:]))
            out[: len(x)] = x
            return out

        mask = torch.stack([pad(it.mask) for it in batch]).to(device)  # (B, W, T)
        if isinstance(batch[0].features, dict):
            feats = {k: torch.stack([pad(it.features[k]) for it in batch]).to(device).float() for k in batch[0].features}
        else:
            feats = torch.stack([pad(it.features) for it in batch]).to(device).float()  # (B, W, T, D)
        weight = torch.from_numpy(lengths / bb.window_samples).float().to(device)  # (B, W)
        frames = Frames(feats, mask, weight)
    labels = torch.from_numpy(np.stack([it.labels for it in batch])).float().to(device)  # (B, A)
    return frames, {"labels": labels}


class _Step(nn.Module):
    """The forward pass of one batch, as a module so DistributedDataParallel can wrap it."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: Frames, text: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return self.model.predict(frames, text).scores


def _loss(scores: dict[str, torch.Tensor], labels: torch.Tensor, model, config: TrainConfig) -> torch.Tensor:
    total = labels.new_zeros(())
    for i, axis in enumerate(model.config.axes):
        if axis not in scores:
            continue
        ok = torch.isfinite(labels[:, i])
        if not ok.any():
            continue
        diff = (scores[axis][ok] - labels[ok, i]) / model.label_std[i]
        total = total + diff.abs().mean()
        if config.loss == "mae+mse":
            total = total + diff.square().mean()
    return total


def _texts(model, batch: list[_Item], device) -> torch.Tensor | None:
    if not model.config.text_axes or any(it.prompt is None for it in batch):
        return None
    return model.backbone.text_embedding([it.prompt for it in batch]).to(device)


def _evaluate(step: _Step, model, items: list[_Item], config: TrainConfig, device, train_backbone: bool) -> tuple[float, dict]:
    from .metrics import evaluate

    model.eval()
    losses, weights, preds = [], [], {a: [] for a in model.config.axes}
    with torch.no_grad():
        for i in range(0, len(items), config.batch_size):
            batch = items[i : i + config.batch_size]
            frames, target = _collate(model, batch, device, train_backbone)
            scores = step(frames, _texts(model, batch, device))
            losses.append(float(_loss(scores, target["labels"], model, config)))
            weights.append(len(batch))
            for a in model.config.axes:
                preds[a] += scores[a].tolist() if a in scores else [math.nan] * len(batch)
    true = {a: [float(it.labels[j]) for it in items] for j, a in enumerate(model.config.axes)}
    metrics = evaluate(preds, true, [it.system for it in items], n_resamples=0) if items else {}
    return float(np.average(losses, weights=weights)), metrics


# -- state --------------------------------------------------------------------------------------------


def _save_state(out: Path, model, optimizer, info: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    state_dir = out / STATE_DIR
    state_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.checkpoint_state().items()}
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for name, value in st.items():
            tensors[f"opt.{pid}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    atomic_write(state_dir / "state.safetensors", lambda p: save_file(tensors, str(p)))
    write_atomic(state_dir / "state.json", json.dumps({**info, "param_groups": opt["param_groups"]}, indent=1))


def _load_state(out: Path, model, optimizer) -> dict[str, Any]:
    from safetensors.torch import load_file

    state_dir = out / STATE_DIR
    if not (state_dir / "state.json").exists():
        raise DataError(f"{out}: no training state to resume from ({STATE_DIR}/state.json is missing)")
    meta = json.loads((state_dir / "state.json").read_text())
    tensors = load_file(str(state_dir / "state.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=False)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    return meta


# -- the loop -----------------------------------------------------------------------------------------


def fit(
    model,
    dataset,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    device: str = "auto",
    resume: bool = False,
    cache_dir: str | None = None,
    workers: int = 2,
    on_event: Callable[[str], None] = lambda message: None,
    on_progress: Callable[[int, int, int], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``dataset.train``, stop early on ``dataset.val`` loss, write the best
    model to ``out_dir`` (a checkpoint folder) with ``train_log.jsonl`` and resumable state.

    The result is reproducible on the CPU for a given seed, and a resumed run ends with the same
    weights as an uninterrupted one (every epoch reseeds from ``seed`` and the epoch number).
    """
    from .checkpoint import write_checkpoint
    from .scoring import resolve_device

    out = Path(out_dir)
    dev = resolve_device(device)
    rank, world = init_distributed(dev)
    if world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if config.batch_size % world:
        raise ConfigError(f"batch size {config.batch_size} is not divisible by the {world} processes")
    if not dataset.train or not dataset.val:
        raise DataError(f"{dataset.name}: training needs a non-empty train and validation split")
    model = model.to(dev)
    train_backbone = not config.freeze_backbone
    model.backbone.requires_grad_(train_backbone)
    train = prepare_items(model, dataset.train, config, dev, cache_dir, workers, on_event)
    val = prepare_items(model, dataset.val, config, dev, cache_dir, workers, on_event)
    if not train or not val:
        raise DataError(f"{dataset.name}: no decodable clip left in the train or validation split")
    step = _Step(model)
    if world > 1:
        step = nn.parallel.DistributedDataParallel(step, find_unused_parameters=True)
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    info = {"epoch": 0, "best_val_loss": math.inf, "best_epoch": 0, "patience_left": config.patience, "config": asdict(config)}
    log_path = out / LOG_NAME
    if resume:
        saved = _load_state(out, model, optimizer)
        if saved["config"] != asdict(config):
            raise ConfigError(f"{out}: was trained with other settings; resume with the same options (or start anew)")
        info = saved
        on_event(f"resuming after epoch {info['epoch']} (best so far: epoch {info['best_epoch']})")
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
    history: list[dict[str, Any]] = []
    per_rank = config.batch_size // world
    epoch = info["epoch"]
    stopped = False
    while epoch < config.max_epochs:
        epoch += 1
        started = time.perf_counter()
        torch.manual_seed(config.seed * 100_003 + epoch)  # every epoch's randomness depends on seed and epoch only
        order = torch.randperm(len(train)).tolist()
        order += order[: (-len(order)) % world]  # equal share per process
        mine = order[rank::world]
        model.train()
        if not train_backbone:
            model.backbone.eval()
        total, count = 0.0, 0
        n_steps = math.ceil(len(mine) / per_rank)
        for s in range(n_steps):
            batch = [train[i] for i in mine[s * per_rank : (s + 1) * per_rank]]
            frames, target = _collate(model, batch, dev, train_backbone)
            scores = step(frames, _texts(model, batch, dev))
            loss = _loss(scores, target["labels"], model, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
            if on_progress is not None and rank == 0:
                on_progress(epoch, s + 1, n_steps)
        val_loss, metrics = _evaluate(step, model, val, config, dev, train_backbone)
        record = {
            "epoch": epoch,
            "train_loss": total / max(count, 1),
            "val_loss": val_loss,
            "val_srcc_system": {a: m["SRCC"] for a, m in metrics.get("system", {}).items()},
            "val_srcc_clip": {a: m["SRCC"] for a, m in metrics.get("clip", {}).items()},
            "seconds": round(time.perf_counter() - started, 3),
        }
        pooling = model.pooling
        if hasattr(pooling, "alpha"):
            record["alpha"], record["beta"] = float(pooling.alpha.detach()), float(pooling.beta.detach())
        improved = val_loss < info["best_val_loss"]
        if improved:
            info.update(best_val_loss=val_loss, best_epoch=epoch, patience_left=config.patience)
        else:
            info["patience_left"] -= 1
        info["epoch"] = epoch
        history.append(record)
        if rank == 0:
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            if improved:
                model.card_info = _card(dataset, config, record)
                write_checkpoint(model, out)
            _save_state(out, model, optimizer, info)
        on_event(
            f"epoch {epoch}: train {record['train_loss']:.4f}, val {val_loss:.4f}"
            + (" (best)" if improved else f" (patience {info['patience_left']})")
        )
        if info["patience_left"] <= 0:
            stopped = True
            break
    if world > 1:
        torch.distributed.barrier()
    return TrainResult(out, info["best_epoch"], info["best_val_loss"], epoch, stopped, history)


def _card(dataset, config: TrainConfig, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "training_data": f"{dataset.name}: {len(dataset.train)} training and {len(dataset.val)} validation clips",
        "recipe": {k: v for k, v in asdict(config).items()},
        "validation": {
            "epoch": record["epoch"],
            "loss": round(record["val_loss"], 5),
            **{f"system SRCC {a}": (None if v is None or v != v else round(v, 4)) for a, v in record["val_srcc_system"].items()},
            **{f"clip SRCC {a}": (None if v is None or v != v else round(v, 4)) for a, v in record["val_srcc_clip"].items()},
        },
    }



def label_stats(examples, axes: tuple[str, ...]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and standard deviation of each axis' labels (std 1 when it is 0 or undefined)."""
    means, stds = [], []
    for a in axes:
        values = np.array([ex.labels[a] for ex in examples if a in ex.labels and math.isfinite(ex.labels[a])])
        if values.size == 0:
            raise DataError(f"no training label for axis {a!r}")
        means.append(float(values.mean()))
        std = float(values.std())
        stds.append(std if std > 1e-8 else 1.0)
    return tuple(means), tuple(stds)


def train(
    dataset,
    model_config,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    **fit_kwargs: Any,
) -> TrainResult:
    """Build the model ``model_config`` describes (label statistics from the training split
    when the recipe standardises labels), load its pretrained backbone, and :func:`fit` it."""
    from .model import MosModel

    missing = [a for a in model_config.axes if not any(a in ex.labels for ex in dataset.train)]
    if missing:
        raise DataError(f"{dataset.name}: no labels for axes {missing} (the data has {', '.join(dataset.axes)})")
    if config.standardize_labels:
        mean, std = label_stats(dataset.train, model_config.axes)
        model_config = replace(model_config, label_mean=mean, label_std=std)
    torch.manual_seed(config.seed)
    model = MosModel(model_config)
    model.backbone.load(pretrained=True)
    return fit(model, dataset, config, out_dir, **fit_kwargs)


def weights_source(spec: str):
    """``--weights``: a local file, or ``REPO_ID:FILENAME[@REVISION]`` on the Hugging Face Hub.

    >>> weights_source("lukewys/laion_clap:630k-audioset-best.pt@main").revision
    'main'
    """
    from .backbones.base import WeightsSource

    if os.path.exists(spec) or ":" not in spec:
        return WeightsSource(path=spec)
    repo, _, rest = spec.partition(":")
    filename, _, revision = rest.partition("@")
    if not repo or not filename:
        raise ConfigError(f"--weights {spec!r}: expected a file or REPO_ID:FILENAME[@REVISION]")
    return WeightsSource(repo_id=repo, filename=filename, revision=revision or None)


def model_config_for(backbone: str, axes: tuple[str, ...], pooling, config: TrainConfig, weights: str | None = None):
    """The model a training run builds: the backbone's published design with the data's axes,
    the chosen pooling, and a backbone that is frozen or fine-tuned as the recipe says."""
    from .model import preset

    model_config = preset(backbone, axes=tuple(axes), pooling=pooling)
    bb = model_config.backbone
    if weights:
        bb = replace(bb, source=weights_source(weights))
    return replace(model_config, backbone=replace(bb, trainable=not config.freeze_backbone))
