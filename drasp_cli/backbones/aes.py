"""AudioBox-Aesthetics' WavLM encoder as a drasp backbone, with per-axis layer mixing.

Meta's ``AesMultiOutput`` runs a WavLM-Base encoder on 10-s windows of 16 kHz audio, mixes its 13
hidden states with one softmax-weighted sum per output axis (CE, CU, PC, PQ), takes the masked
mean over time, L2-normalises it and applies one linear layer per axis. This backbone is the
part up to the layer mixing: ``encode`` returns, per axis, the mixed frames ``(W, T, 768)`` and
Meta's own frame mask, so drasp's ``average`` pooling, L2 normalisation and linear heads filled
from :func:`aes_head_state` reproduce Meta's scores.

Only the ``audiobox_aesthetics.model`` package is used, imported inside :meth:`AesBackbone.load`:
its ``infer.py`` needs torchaudio and its CLI needs submitit, neither of which drasp installs.

Weights come from Meta's ``checkpoint.pt`` (Hub ``facebook/audiobox-aesthetics``), from the
``from_pretrained`` layout (``config.json`` + ``model.safetensors``) or from a local copy of
either; see :func:`read_aes_checkpoint`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..hub import hub_file, resolve_weights
from .base import Backbone, BackboneConfig, LongAudio, WeightsSource

SAMPLE_RATE = 16_000  # WavLM-Base's rate; Meta resamples every input to it
WINDOW_SECONDS = 10.0  # infer.py: make_inference_batch(wavs, hop_size=10, window_size=10)
FEATURE_DIM = 768  # WavLM-Base's encoder_embed_dim
AXES = ("CE", "CU", "PC", "PQ")  # Meta's AXES_NAME, in its order
N_HIDDEN = 13  # AesMultiOutput.nth_layer: the conv-feature embedding + 12 transformer layers
# (kernel, stride) of WavLM-Base's conv front end, DEFAULT_AUDIO_CFG's
# "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2": a hop of 5 * 2**6 = 320 samples = 20 ms.
CONV_LAYERS = ((10, 5),) + ((3, 2),) * 4 + ((2, 2),) * 2
FRAME_HOP = math.prod(s for _, s in CONV_LAYERS)  # 320 samples, 50 frames/s at 16 kHz

HUB_REPO = "facebook/audiobox-aesthetics"  # Meta's released weights
HUB_FILE = "checkpoint.pt"
PRETRAINED_WEIGHTS = "model.safetensors"  # PyTorchModelHubMixin's file names
PRETRAINED_CONFIG = "config.json"
INSTALL_HINT = "pip install --no-deps audiobox-aesthetics==0.0.4"

# AesMultiOutput's fields that shape the network or its outputs, with the model's defaults: a
# from_pretrained config.json holds only the fields passed explicitly when it was saved.
# ``precision`` and ``freeze_encoder`` are left out: neither changes inference (autocast never
# switches on in the released code, so the official scores are fp32).
MODEL_DEFAULTS: dict[str, Any] = {
    "proj_num_layer": 1,
    "proj_ln": False,
    "proj_act_fn": "gelu",
    "proj_dropout": 0,
    "nth_layer": N_HIDDEN,
    "use_weighted_layer_sum": True,
    "normalize_embed": True,
    "output_dim": 1,
}


def conv_frames(n_samples: int) -> int:
    """Frames WavLM's conv front end makes from ``n_samples`` (no padding in its convolutions).

    >>> conv_frames(160_000), conv_frames(16_000)
    (499, 49)
    """
    n = n_samples
    for kernel, stride in CONV_LAYERS:
        n = max(0, (n - kernel) // stride + 1)
    return n


# -- reading Meta's checkpoints -------------------------------------------------------------------


@dataclass(frozen=True)
class AesCheckpoint:
    """An ``AesMultiOutput`` checkpoint, whichever layout it was read from."""

    path: Path  # the weights file that was read
    state_dict: dict[str, torch.Tensor]  # AesMultiOutput keys, without checkpoint.pt's "model." prefix
    model_cfg: dict[str, Any]  # MODEL_DEFAULTS' fields, with the model's defaults filled in
    target_transform: dict[str, dict[str, float]] | None  # axis -> {"mean", "std"} of the labels


@dataclass(frozen=True)
class AesHeads:
    """Meta's per-axis output layers, to fill the linear heads of a drasp model.

    A head maps the L2-normalised (if ``l2_normalize``), masked-mean-pooled layer mix of its axis,
    ``x`` ``(B, 768)``, to a normalised score ``x @ weight[axis].T + bias[axis]`` ``(B, 1)``; the
    score in label units is that times ``label_std[axis]`` plus ``label_mean[axis]``.
    """

    axes: tuple[str, ...]  # Meta's axis order
    weight: dict[str, torch.Tensor]  # axis -> (1, 768) float32
    bias: dict[str, torch.Tensor]  # axis -> (1,) float32
    label_mean: dict[str, float]  # axis -> target_transform mean
    label_std: dict[str, float]  # axis -> target_transform std
    l2_normalize: bool  # AesMultiOutput.normalize_embed


def _as_source(source: WeightsSource | str | Path) -> WeightsSource:
    return source if isinstance(source, WeightsSource) else WeightsSource(path=str(source))


def _locate(source: WeightsSource) -> tuple[Path, Path | None]:
    """The weights file of ``source`` and, for the from_pretrained layout, its ``config.json``."""
    if source.path and Path(source.path).expanduser().is_dir():
        folder = Path(source.path).expanduser()
        if not (folder / PRETRAINED_WEIGHTS).is_file():
            raise CheckpointError(
                f"{folder}: a folder of AudioBox-Aesthetics weights must hold {PRETRAINED_WEIGHTS} "
                f"and {PRETRAINED_CONFIG} (the from_pretrained layout); or pass Meta's {HUB_FILE} itself"
            )
        # ``sha256``, when recorded, is the digest of the weights file.
        weights = resolve_weights(dataclasses.replace(source, path=str(folder / PRETRAINED_WEIGHTS)))
        return weights, folder / PRETRAINED_CONFIG
    weights = resolve_weights(source)
    if weights.suffix != ".safetensors":
        return weights, None
    if source.path:
        return weights, weights.parent / PRETRAINED_CONFIG
    # The config lies beside the weights in the same Hub repository (and revision).
    config_name = str(PurePosixPath(source.filename).parent / PRETRAINED_CONFIG)
    return weights, hub_file(source.repo_id, config_name, source.revision)


def _unpickler_reason(error: Exception) -> str:
    """The specific part of torch's long weights_only message (what it would not load)."""
    text = str(error)
    _, found, reason = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (reason if found else text).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _read_torch_checkpoint(path: Path) -> tuple[dict, dict, dict | None]:
    """State dict, model config and target transform of Meta's ``checkpoint.pt``."""
    try:
        # weights_only: a checkpoint is data; never run the code a pickle may carry.
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused: torch.load(weights_only=True) cannot load it ({_unpickler_reason(e)}); it is not a "
            f"PyTorch checkpoint, or it holds Python objects besides tensors. Use Meta's released {HUB_FILE} or "
            "the from_pretrained layout"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(
            f"{path}: not an AudioBox-Aesthetics checkpoint: expected a dict with a 'state_dict' entry, "
            f"as Meta's {HUB_FILE} has"
        )
    # infer.py strips the prefix with re.sub("^model.", "", k), key by key.
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    cfg = ckpt.get("model_cfg") or {}
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: 'model_cfg' is a {type(cfg).__name__}, not a dict")
    return state, cfg, ckpt.get("target_transform")


def _read_pretrained(weights: Path, config: Path) -> tuple[dict, dict, dict | None]:
    """State dict, model config and target transform of the from_pretrained layout."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not config.is_file():
        raise CheckpointError(
            f"{weights}: {PRETRAINED_CONFIG} not found beside it; the from_pretrained layout needs both files"
        )
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{config}: not a readable JSON config ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{config}: expected a JSON object, found {type(cfg).__name__}")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({e})") from None
    return state, cfg, cfg.get("target_transform")


def read_aes_checkpoint(source: WeightsSource | str | Path) -> AesCheckpoint:
    """Read an AudioBox-Aesthetics (``AesMultiOutput``) checkpoint in either released layout.

    Parameters
    ----------
    source
        A :class:`WeightsSource` (a local path, or a Hub ``repo_id`` + ``filename``), or a local
        path: Meta's ``checkpoint.pt``; a ``model.safetensors`` with its ``config.json`` beside
        it; or a folder holding those two (what ``AesMultiOutput.save_pretrained`` writes).

    Returns
    -------
    AesCheckpoint
        The state dict with Meta's key names (float tensors as float32), the model config with
        the model's defaults filled in where ``config.json`` left them out, and the labels'
        ``target_transform``. Config fields the model does not have are ignored, as Meta's
        ``from_pretrained`` and ``infer.py`` ignore them.

    Raises
    ------
    CheckpointError
        The file is missing, is not a checkpoint ``torch.load(weights_only=True)`` accepts, or
        does not have the layout of Meta's checkpoints.
    """
    weights, config = _locate(_as_source(source))
    if config is None:
        state, cfg, transform = _read_torch_checkpoint(weights)
    else:
        state, cfg, transform = _read_pretrained(weights, config)
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{weights}: state dict entries that are not tensors: {', '.join(bad[:5])}")
    # Meta's loaders copy into fp32 parameters; do the same so a bf16 file gives fp32 weights.
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model_cfg = {k: cfg.get(k, default) for k, default in MODEL_DEFAULTS.items()}
    if transform is not None:
        transform = _check_transform(weights, transform)
    return AesCheckpoint(path=weights, state_dict=state, model_cfg=model_cfg, target_transform=transform)


def _check_transform(path: Path, transform: Any) -> dict[str, dict[str, float]]:
    try:
        out = {axis: {"mean": float(transform[axis]["mean"]), "std": float(transform[axis]["std"])} for axis in AXES}
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(
            f"{path}: 'target_transform' must give a numeric mean and std for each of {', '.join(AXES)}"
        ) from None
    if any(not math.isfinite(t["mean"]) or not t["std"] > 0 for t in out.values()):
        raise CheckpointError(f"{path}: 'target_transform' needs finite means and positive stds: {out}")
    return out


def _key_report(missing: list[str], unexpected: list[str], few: int = 4) -> str:
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            more = f" (+{len(keys) - few} more)" if len(keys) > few else ""
            parts.append(f"{len(keys)} {what} keys, e.g. {', '.join(sorted(keys)[:few])}{more}")
    return "; ".join(parts)


def heads_from_checkpoint(ckpt: AesCheckpoint) -> AesHeads:
    """Meta's per-axis linear layers and label statistics, from a checkpoint already read."""
    cfg = ckpt.model_cfg
    if cfg["proj_num_layer"] != 1 or cfg["output_dim"] != 1:
        raise CheckpointError(
            f"{ckpt.path}: its heads are {cfg['proj_num_layer']}-layer MLPs with {cfg['output_dim']} outputs; "
            "drasp fills one linear layer with one output per axis (proj_num_layer=1, output_dim=1)"
        )
    if ckpt.target_transform is None:
        raise CheckpointError(
            f"{ckpt.path}: no 'target_transform' (the label mean and std per axis), so its scores cannot be "
            "de-normalised"
        )
    names = [f"proj_layer.{axis}.0.{p}" for axis in AXES for p in ("weight", "bias")]
    missing = [k for k in names if k not in ckpt.state_dict]
    if missing:
        raise CheckpointError(f"{ckpt.path}: no AudioBox-Aesthetics heads: {_key_report(missing, [])}")
    weight = {a: ckpt.state_dict[f"proj_layer.{a}.0.weight"].clone() for a in AXES}
    bias = {a: ckpt.state_dict[f"proj_layer.{a}.0.bias"].clone() for a in AXES}
    for a in AXES:
        if weight[a].shape != (1, FEATURE_DIM) or bias[a].shape != (1,):
            raise CheckpointError(
                f"{ckpt.path}: head {a} has weight {tuple(weight[a].shape)} and bias {tuple(bias[a].shape)}; "
                f"expected (1, {FEATURE_DIM}) and (1,)"
            )
    return AesHeads(
        axes=AXES,
        weight=weight,
        bias=bias,
        label_mean={a: ckpt.target_transform[a]["mean"] for a in AXES},
        label_std={a: ckpt.target_transform[a]["std"] for a in AXES},
        l2_normalize=bool(cfg["normalize_embed"]),
    )


def aes_head_state(source: WeightsSource | str | Path) -> AesHeads:
    """Meta's per-axis linear heads and label mean/std, read from an AudioBox-Aesthetics checkpoint.

    ``source`` is what :func:`read_aes_checkpoint` takes. A loaded :class:`AesBackbone` with a
    source already holds the same in ``backbone.pretrained_heads``, without reading the file again.
    """
    return heads_from_checkpoint(read_aes_checkpoint(source))


# -- the backbone ----------------------------------------------------------------------------------


@contextmanager
def _quiet_meta_code() -> Iterator[None]:
    """Run Meta's WavLM code without its warnings and without drawing from numpy's global RNG.

    Its TransformerEncoder draws ``np.random.random()`` for layerdrop on every layer even in eval
    mode, which would shift the random stream of a caller that seeded numpy. Its warnings (the
    deprecated ``weight_norm``, mismatched attention mask types) are not the user's to act on.
    """
    state = np.random.get_state()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*weight_norm.*is deprecated", category=FutureWarning)
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask", category=UserWarning)
            yield
    finally:
        np.random.set_state(state)


class AesBackbone(Backbone):
    """AudioBox-Aesthetics' WavLM-Base encoder at 16 kHz with Meta's per-axis layer mixing.

    ``encode`` gives one stream per axis of :data:`AXES`: the softmax-weighted sum of WavLM's
    13 hidden states with that axis's layer weights, ``(W, 499, 768)`` per 10-s window, and
    the frame mask Meta's model derives from the sample mask. Audio is cut into non-overlapping
    10-s windows, the last (or only) one zero-padded to 10 s, as Meta's ``infer.py`` does; the
    per-file score is the mean of the window scores weighted by each window's real length.

    >>> from drasp_cli.backbones.base import BackboneConfig
    >>> b = AesBackbone(BackboneConfig(name="aes"))
    >>> b.sample_rate, b.frame_rate, b.frames_per_window, b.feature_dim, b.streams
    (16000, 50.0, 499, 768, ('CE', 'CU', 'PC', 'PQ'))
    """

    name = "aes"
    description = "AudioBox-Aesthetics WavLM-Base (16 kHz), per-axis layer mix of 13 hidden states"
    long_audio: LongAudio = "window-mean"

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__(config)
        if config.variant not in (None, "base"):
            raise ConfigError(f"backbone 'aes' has one variant, 'base' (WavLM-Base); got {config.variant!r}")
        if config.options:
            raise ConfigError(f"backbone 'aes' takes no options; got {', '.join(sorted(config.options))}")
        self.pretrained_heads: AesHeads | None = None  # Meta's heads, once load() has read a source

    # -- facts known without loading -------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    @property
    def frame_rate(self) -> float:
        return SAMPLE_RATE / FRAME_HOP

    @property
    def feature_dim(self) -> int:
        return FEATURE_DIM

    @property
    def window_seconds(self) -> float:
        return WINDOW_SECONDS

    @property
    def frames_per_window(self) -> int:
        # The convolutions do not pad, so a 10-s window gives 499 frames, not 10 * 50.
        return conv_frames(self.window_samples)

    @property
    def streams(self) -> tuple[str, ...]:
        return AXES

    # -- heavy part ------------------------------------------------------------------------
    def load(self, pretrained: bool = True) -> None:
        """Build WavLM-Base and the per-axis layer weights; read them from ``config.source``.

        Without a source (or with ``pretrained=False``, when a drasp checkpoint stores the
        weights) they are random (WavLM's own init, uniform layer weights). With one,
        ``self.pretrained_heads`` holds Meta's heads too.

        Raises
        ------
        ConfigError
            The ``audiobox-aesthetics`` package is not installed.
        CheckpointError
            The source cannot be read, or holds another architecture's state dict.
        """
        if self.loaded:
            return
        try:
            from audiobox_aesthetics.model.aes import DEFAULT_AUDIO_CFG
            from audiobox_aesthetics.model.wavlm import WavLM
        except ImportError as e:
            raise ConfigError(
                f"backbone 'aes' needs Meta's audiobox-aesthetics package ({e}); install its model code with "
                f"`{INSTALL_HINT}` (without --no-deps it would replace torch through torchaudio)"
            ) from None

        ckpt = read_aes_checkpoint(self.config.source) if pretrained and self.config.source is not None else None
        n_hidden = N_HIDDEN if ckpt is None else self._check_model_cfg(ckpt)
        # WavLM's init copies through the CPU, so it cannot be skipped with a meta-device build.
        with _quiet_meta_code():
            wavlm = WavLM(DEFAULT_AUDIO_CFG)
            layer_weights = nn.ParameterDict({a: nn.Parameter(torch.ones(n_hidden) / n_hidden) for a in AXES})
        # Same attribute names as AesMultiOutput, so the state-dict keys are Meta's.
        self.wavlm_model = wavlm
        self.layer_weights = layer_weights
        self.n_hidden = n_hidden
        if ckpt is not None:
            self._load_from(ckpt)
            self.pretrained_heads = heads_from_checkpoint(ckpt)
        self.train(self.training)
        self.loaded = True

    def _check_model_cfg(self, ckpt: AesCheckpoint) -> int:
        cfg = ckpt.model_cfg
        if not cfg["use_weighted_layer_sum"]:
            raise CheckpointError(
                f"{ckpt.path}: use_weighted_layer_sum is false; the 'aes' backbone mixes the hidden states "
                "with per-axis layer weights"
            )
        n = cfg["nth_layer"]
        if not isinstance(n, int) or not 1 <= n <= N_HIDDEN:
            raise CheckpointError(f"{ckpt.path}: nth_layer={n!r}; WavLM-Base has 1 to {N_HIDDEN} hidden states")
        return n

    def _load_from(self, ckpt: AesCheckpoint) -> None:
        expected = set(self.state_dict().keys())
        # The heads belong to drasp's model, not to the backbone: they are allowed, not loaded.
        unexpected = [k for k in ckpt.state_dict if k not in expected and not k.startswith("proj_layer.")]
        missing = [k for k in expected if k not in ckpt.state_dict]
        if missing or unexpected:
            raise CheckpointError(
                f"{ckpt.path}: not an AudioBox-Aesthetics (AesMultiOutput) state dict: "
                f"{_key_report(missing, unexpected)}"
            )
        try:
            self.load_state_dict({k: ckpt.state_dict[k] for k in expected}, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{ckpt.path}: tensor shapes differ from AesMultiOutput's: {e}") from None

    def train(self, mode: bool = True) -> AesBackbone:
        """Set training mode, but keep WavLM in eval mode.

        WavLM's dropout and layerdrop (which skips whole layers) are pretraining regularisers;
        Meta trained the aesthetics heads on a frozen encoder, and drasp wants the same frames
        in training as in scoring.
        """
        super().train(mode)
        if hasattr(self, "wavlm_model"):
            self.wavlm_model.eval()
        return self

    def frozen_state_keys(self) -> list[str]:
        """All backbone keys (WavLM and layer weights) when a source gives them, else none."""
        return list(self.state_dict().keys()) if self.config.source is not None else []

    # -- windows -> frames -------------------------------------------------------------------------
    def encode(self, windows: torch.Tensor, lengths: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Per-axis layer mixes ``{axis: (W, 499, 768)}`` and the frame mask ``(W, 499)``.

        Windows without real audio (those that only pad a batch) are not run through WavLM:
        their frames are zeros and their mask is all False.
        """
        if not self.loaded:
            raise RuntimeError("AesBackbone.encode called before load()")
        real = lengths > 0
        if bool(real.all()):
            return self._encode(windows, lengths)
        n_win, t = windows.shape[0], self.frames_per_window
        feats = {a: windows.new_zeros((n_win, t, FEATURE_DIM)) for a in AXES}
        mask = torch.zeros((n_win, t), dtype=torch.bool, device=windows.device)
        if bool(real.any()):
            idx = real.nonzero().squeeze(1)  # (W_real,)
            sub_feats, sub_mask = self._encode(windows[idx], lengths[idx])
            feats = {a: feats[a].index_copy(0, idx, sub_feats[a]) for a in AXES}
            mask = mask.index_copy(0, idx, sub_mask)
        return feats, mask

    def _encode(self, windows: torch.Tensor, lengths: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        # The sample mask of infer.py (True on the first `length` samples), negated as
        # AesMultiOutput.forward does; WavLM.cfg.normalize is False in DEFAULT_AUDIO_CFG, so no
        # input layer norm.
        n = windows.shape[-1]
        padding = torch.arange(n, device=windows.device)[None, :] >= lengths[:, None]  # (W, N)
        with _quiet_meta_code():
            (_, layer_results), embed_padding = self.wavlm_model.extract_features(
                source=windows.float(),
                padding_mask=padding,
                output_layer=self.n_hidden,
                ret_layer_results=True,
            )
        hidden = torch.stack([h for h, _ in layer_results], dim=-1)  # (T, W, D, L)
        feats = {}
        for axis in AXES:
            mix = torch.softmax(self.layer_weights[axis], dim=-1)  # (L,)
            feats[axis] = torch.einsum("tbcl,l->btc", hidden, mix)  # (W, T, D), AesMultiOutput's einsum
        # WavLM.forward_padding_mask: a frame is padding when all its FRAME_HOP samples are.
        return feats, ~embed_padding

    def window_frame_mask(self, lengths: torch.Tensor) -> torch.Tensor:
        """``(W, 499)`` mask of WavLM.forward_padding_mask, computed from the lengths alone.

        Meta drops the trailing ``window_samples % 499`` samples, splits the rest into 499 runs of
        320 and marks a frame valid when its run holds a real sample: frame ``t`` is valid iff
        ``320 t < length``.
        """
        t = self.frames_per_window
        hop = self.window_samples // t  # 160000 // 499 = 320 samples per frame
        return torch.arange(t, device=lengths.device)[None, :] * hop < lengths[:, None]
