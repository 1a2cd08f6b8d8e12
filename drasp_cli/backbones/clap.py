"""LAION-CLAP as a drasp backbone: HTSAT frame features and the RoBERTa text tower.

The audio branch is laion-clap's HTSAT on 10-s windows of 48 kHz audio. Its
``fine_grained_embedding`` has 1024 time steps per window, but only 32 are distinct: HTSAT
ends with 32 time tokens (4 stacked 2.5-s chunks x 8 tokens) and repeats each 32 times. The
backbone keeps those 32 frames (3.2 frames/s, 312.5 ms each); their mean is exactly HTSAT's
``embedding``, the vector CLAP projects into its joint space, so pooling them loses nothing and
costs 32x less than pooling the repeated sequence.

Preprocessing follows the official wrapper (``CLAP_Module.get_audio_embedding_from_data``): an
int16 round trip, and "repeatpad" for clips up to 10 s. Where the wrapper crops longer clips at a
random offset, drasp cuts them into fixed 10-s windows, the last one zero-padded and masked, so a
score never depends on chance.

Only laion-clap's ``clap_module`` is imported, inside :meth:`ClapBackbone.load`: importing the
``laion_clap`` package runs ``laion_clap/training/data.py``, which loads three tokenizers from the
Hub at import time. The network is built from laion-clap's and transformers' classes under
CLAP's attribute names, with the RoBERTa text tower built from roberta-base's configuration
rather than downloaded, then filled from a released LAION-CLAP ``.pt`` file when the config names
one.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pickle
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AudioError, CheckpointError, ConfigError
from ..hub import resolve_weights
from .base import Backbone, BackboneConfig, cut_windows

SAMPLE_RATE = 48_000  # laion-clap's audio_cfg["sample_rate"]
WINDOW_SECONDS = 10  # laion-clap's clip_samples / sample_rate; HTSAT refuses longer inputs
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE  # 480000 samples
FRAMES_PER_WINDOW = 32  # HTSAT's distinct time tokens: 4 stacked 2.5-s chunks x 8 tokens
FRAME_RATE = FRAMES_PER_WINDOW / WINDOW_SECONDS  # 3.2 frames/s, 312.5 ms per frame
INT16_SCALE = 32767.0  # laion-clap's float32_to_int16 / int16_to_float32 scale
JOINT_DIM = 512  # CLAP's joint_embed_shape: audio_projection's and text_projection's output
TEXT_WIDTH = 768  # roberta-base's hidden size, text_projection's input
TEXT_LENGTH = 77  # laion-clap's tokenizer max_length (CLIP's context length)

VARIANTS = {"HTSAT-tiny": 768, "HTSAT-base": 1024}  # laion-clap model config -> HTSAT output width
DEFAULT_VARIANT = "HTSAT-base"  # music_audioset_epoch_15_esc_90.14.pt, MusicEval's baseline and the paper
OPTION_DEFAULTS: dict[str, Any] = {
    "tokenizer": "roberta-base",  # Hub id or local folder of the RoBERTa tokenizer (text axes only)
}

# roberta-base's config.json. RobertaConfig()'s own defaults differ (512 positions, 2 token types,
# eps 1e-12), and the released .pt files hold roberta-base's shapes.
ROBERTA_BASE: dict[str, Any] = {
    "vocab_size": 50265,
    "hidden_size": TEXT_WIDTH,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}

CLAP_PARTS = ("audio_branch.", "text_branch.", "audio_projection.", "text_projection.")  # ClapNet's modules
# Parts of CLAP that only its contrastive training uses; the released files hold them, drasp
# neither builds nor loads them.
UNUSED_PREFIXES = ("text_transform.", "audio_transform.", "logit_scale_a", "logit_scale_t")
# A buffer the released files hold but transformers >= 4.31 no longer saves: taken from the file
# when the model has it, ignored when it does not.
POSITION_IDS = "text_branch.embeddings.position_ids"
# A sentence every real RoBERTa vocabulary encodes without <unk>: a tokenizer that turns any of
# its words into <unk> (transformers 5.x offline returns a 5-token one silently) is refused.
TOKENIZER_PROBE = "a calm piano melody with soft strings and a slow drum beat"


def int16_round_trip(signal: np.ndarray) -> np.ndarray:
    """Quantise to int16 and back as laion-clap does, clipping to ±1 first.

    Same arithmetic as laion-clap's ``int16_to_float32(float32_to_int16(x))``: the cast
    truncates toward zero.

    >>> int16_round_trip(np.array([0.5, 2.0, -1.5], dtype=np.float32)).tolist()
    [0.4999847412109375, 1.0, -1.0]
    """
    quantised = (np.clip(signal, -1.0, 1.0) * INT16_SCALE).astype(np.int16)
    return (quantised / INT16_SCALE).astype(np.float32)


def repeat_pad(signal: np.ndarray, size: int = WINDOW_SAMPLES) -> np.ndarray:
    """laion-clap's "repeatpad" of a clip no longer than ``size``: ``int(size / len)`` whole
    copies, then zeros (not a tiling to the full length).

    >>> repeat_pad(np.array([1.0, 2.0], dtype=np.float32), 5).tolist()
    [1.0, 2.0, 1.0, 2.0, 0.0]
    """
    out = np.zeros(size, dtype=np.float32)
    if len(signal):
        copies = size // len(signal)  # int(max_len / len(audio_data)) in laion-clap
        out[: copies * len(signal)] = np.tile(signal, copies)
    return out


class ClapNet(nn.Module):
    """The parts of laion-clap's ``CLAP`` that drasp uses, under ``CLAP``'s attribute names so
    a released state dict loads key for key (after :data:`UNUSED_PREFIXES` are dropped).

    The projections are ``CLAP``'s: Linear -> ReLU -> Linear into the 512-wide joint space.
    """

    def __init__(self, audio_branch: nn.Module, text_branch: nn.Module, audio_width: int) -> None:
        super().__init__()
        self.audio_branch = audio_branch
        self.text_branch = text_branch
        self.text_projection = nn.Sequential(
            nn.Linear(TEXT_WIDTH, JOINT_DIM), nn.ReLU(), nn.Linear(JOINT_DIM, JOINT_DIM)
        )
        self.audio_projection = nn.Sequential(
            nn.Linear(audio_width, JOINT_DIM), nn.ReLU(), nn.Linear(JOINT_DIM, JOINT_DIM)
        )


class ClapBackbone(Backbone):
    """LAION-CLAP's HTSAT frames (3.2 frames/s) with CLAP's audio projection and text encoder.

    ``variant`` is ``"HTSAT-base"`` (default, 1024-wide frames) or ``"HTSAT-tiny"`` (768);
    ``options["tokenizer"]`` locates the RoBERTa tokenizer (a Hub id, default ``"roberta-base"``,
    or a local folder), needed only for text embeddings. ``source`` names a released LAION-CLAP
    ``.pt`` file; without one the network has random weights.

    >>> b = ClapBackbone(BackboneConfig(name="clap"))
    >>> b.feature_dim, b.frame_rate, b.frames_per_window, b.embedding_dim
    (1024, 3.2, 32, 512)
    >>> w, n = b.prepare(np.zeros(25 * 48_000, dtype=np.float32))
    >>> w.shape, n.tolist()
    ((3, 480000), [480000, 480000, 240000])
    """

    name = "clap"
    description = "LAION-CLAP HTSAT frames + RoBERTa text encoder (laion-clap)"
    long_audio = "concat"

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__(config)
        self.variant = config.variant or DEFAULT_VARIANT
        if self.variant not in VARIANTS:
            raise ConfigError(f"backbone 'clap' has no variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        unknown = sorted(set(config.options) - set(OPTION_DEFAULTS))
        if unknown:
            raise ConfigError(
                f"backbone 'clap' has no option {unknown[0]!r}; its options are {', '.join(OPTION_DEFAULTS)}"
            )
        self.options = {**OPTION_DEFAULTS, **config.options}
        self.clap: ClapNet | None = None
        self._tokenizer: Any = None

    # -- facts known without loading -------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    @property
    def frame_rate(self) -> float:
        return FRAME_RATE

    @property
    def feature_dim(self) -> int:
        return VARIANTS[self.variant]

    @property
    def window_seconds(self) -> float:
        return float(WINDOW_SECONDS)

    @property
    def embedding_dim(self) -> int:
        return JOINT_DIM

    @property
    def has_text(self) -> bool:
        return True

    # -- heavy part ------------------------------------------------------------------------
    def load(self, pretrained: bool = True) -> None:
        """Build CLAP's audio and text towers and read ``config.source``'s weights, if any
        (not with ``pretrained=False``, when a drasp checkpoint stores them).

        Raises :class:`ConfigError` when laion-clap cannot be imported and
        :class:`CheckpointError` when the weights cannot be read or do not fit the variant.
        """
        if self.loaded:
            return
        # Read the file before the 2-4 s build, so a bad source fails at once.
        path = resolve_weights(self.config.source) if pretrained and self.config.source is not None else None
        state = read_clap_state_dict(path) if path is not None else None
        if state is not None:
            _check_towers(state, path)
        htsat, clap_model, config_dir = _import_clap_module()
        from transformers import RobertaConfig, RobertaModel

        cfg = json.loads((config_dir / f"{self.variant}.json").read_text())  # laion-clap's own config
        with warnings.catch_warnings():
            # HTSAT's relative-position index calls torch.meshgrid without indexing=: not the user's to act on.
            warnings.filterwarnings("ignore", message="torch.meshgrid", category=UserWarning)
            audio_branch = htsat.create_htsat_model(clap_model.CLAPAudioCfp(**cfg["audio_cfg"]), False, "None")
        net = ClapNet(audio_branch, RobertaModel(RobertaConfig(**ROBERTA_BASE)), self.feature_dim)
        if state is not None:
            _load_state(net, state, path, self.variant)
        # Eval mode until a caller asks for training: scores never depend on chance.
        self.clap = net.eval()
        if not self.config.trainable:
            net.requires_grad_(False)
        self.loaded = True

    def train(self, mode: bool = True) -> ClapBackbone:
        """Set training mode; a frozen (not trainable) backbone stays in eval mode.

        In training mode HTSAT applies SpecAugment, dropout and drop-path at random and its input
        batch norm updates its running statistics: a frozen feature extractor must do none of it.
        """
        super().train(mode)
        if self.clap is not None and not self.config.trainable:
            self.clap.eval()
        return self

    def frozen_state_keys(self) -> list[str]:
        """All backbone keys when ``config.source`` gives them (the load is strict), else none."""
        return list(self.state_dict().keys()) if self.config.source is not None else []

    def _net(self) -> ClapNet:
        if self.clap is None:
            raise RuntimeError("ClapBackbone used before load()")
        return self.clap

    # -- audio -----------------------------------------------------------------------------
    def prepare(self, signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Windows ``(W, 480000)`` and real lengths ``(W,)`` of a mono 48 kHz signal.

        The signal goes through laion-clap's int16 round trip. A clip up to 10 s becomes one
        "repeatpad" window, as the official wrapper makes it; its length counts as the full
        window, so all its frames are valid and their mean is the official ``embedding`` (which
        averages all 32 frames, the zero tail after the last copy included). A longer clip is cut
        into 10-s windows, the last zero-padded: its frames after the real audio are masked. A
        clip of no samples gives one silent window of length 0 (no valid frame).
        """
        signal = np.asarray(signal)
        if signal.ndim != 1:
            raise AudioError(f"backbone 'clap' takes mono signals; got an array of shape {signal.shape}")
        if not np.isfinite(signal).all():
            raise AudioError("audio holds NaN or infinite samples")
        audio = int16_round_trip(signal.astype(np.float32, copy=False))
        if len(audio) > WINDOW_SAMPLES:
            return cut_windows(audio, WINDOW_SAMPLES)
        length = WINDOW_SAMPLES if len(audio) else 0
        return repeat_pad(audio)[None], np.array([length], dtype=np.int64)  # (1, 480000), (1,)

    def encode(self, windows: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """HTSAT frames ``(W, 32, D)`` of windows ``(W, 480000)``, and their mask ``(W, 32)``.

        Windows without real audio (those that only pad a batch) skip HTSAT: zero frames, all
        masked.
        """
        net = self._net()
        real = lengths > 0
        if bool(real.all()):
            return self._frames(net, windows), self.window_frame_mask(lengths)
        feats = windows.new_zeros((windows.shape[0], FRAMES_PER_WINDOW, self.feature_dim))  # (W, 32, D)
        if bool(real.any()):
            idx = real.nonzero().squeeze(1)  # (W_real,)
            feats = feats.index_copy(0, idx, self._frames(net, windows[idx]))
        return feats, self.window_frame_mask(lengths)

    @staticmethod
    def _frames(net: ClapNet, windows: torch.Tensor) -> torch.Tensor:
        out = net.audio_branch({"waveform": windows}, device=windows.device)
        fine = out["fine_grained_embedding"]  # (W, 1024, D): each distinct frame repeated
        repeat = fine.shape[1] // FRAMES_PER_WINDOW  # 32
        # A copy, so the 32x larger repeated tensor is freed at once.
        return fine[:, ::repeat].contiguous()  # (W, 32, D)

    def audio_projection(self, x: torch.Tensor) -> torch.Tensor:
        """CLAP's ``audio_projection`` of ``(B, feature_dim)`` vectors -> ``(B, 512)``, not
        normalised (the model L2-normalises)."""
        return self._net().audio_projection(x)

    # -- text ------------------------------------------------------------------------------
    def text_embedding(self, texts: list[str]) -> torch.Tensor:
        """``(B, 512)`` L2-normalised CLAP text embeddings, as ``CLAP.get_text_embedding`` makes
        them (RoBERTa pooler output -> ``text_projection``).

        The tokenizer is loaded on first use from ``options["tokenizer"]``; see
        :func:`load_roberta_tokenizer`.
        """
        net = self._net()
        if not texts:
            return net.text_projection[0].weight.new_zeros((0, JOINT_DIM))
        if self._tokenizer is None:
            self._tokenizer = load_roberta_tokenizer(self.options["tokenizer"], ROBERTA_BASE["vocab_size"])
        tokens = self._tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=TEXT_LENGTH, return_tensors="pt"
        )
        device = net.text_projection[0].weight.device
        pooled = net.text_branch(
            input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
        )["pooler_output"]  # (B, 768)
        return F.normalize(net.text_projection(pooled), dim=-1)


def _import_clap_module() -> tuple[Any, Any, Path]:
    """laion-clap's ``clap_module.htsat`` and ``clap_module.model`` and its model-config folder.

    laion-clap imports its own modules as the top-level package ``clap_module`` (its
    ``__init__`` appends its folder to ``sys.path``). Doing the same without importing
    ``laion_clap`` skips ``laion_clap/training/data.py``, which calls ``from_pretrained`` on three
    Hub tokenizers at import time (minutes of retries offline); the modules are shared with
    ``laion_clap`` if it is imported too.
    """
    spec = importlib.util.find_spec("laion_clap")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("backbone 'clap' needs the laion-clap package: pip install 'laion-clap>=1.1.6,<1.2'")
    folder = Path(list(spec.submodule_search_locations)[0])
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    try:
        htsat = importlib.import_module("clap_module.htsat")
        model = importlib.import_module("clap_module.model")
    except (ImportError, RuntimeError) as e:
        # RuntimeError: a torchvision built for another torch fails with "operator torchvision::nms does not exist".
        raise ConfigError(
            f"laion-clap could not be imported ({e}); it needs torchvision and torchlibrosa that match the "
            f"installed torch {torch.__version__}"
        ) from None
    if not Path(htsat.__file__).resolve().is_relative_to(folder.resolve()):
        raise ConfigError(f"another package named clap_module ({htsat.__file__}) hides laion-clap's")
    return htsat, model, folder / "clap_module" / "model_configs"


def read_clap_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a released LAION-CLAP ``.pt`` file, with keys as ``CLAP`` names them.

    The file is read with ``weights_only=True``: a file that needs other Python objects is
    refused with a :class:`CheckpointError` naming the first one. The ``module.`` prefix that
    distributed training left is stripped from every key that has it.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        wanted = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if wanted is None:  # not a pickle at all, e.g. "Unsupported operand 103"
            raise CheckpointError(
                f"{path}: not a readable PyTorch checkpoint (the file is corrupt or of another format)"
            ) from None
        raise CheckpointError(
            f"{path}: refused to unpickle: it needs the Python object {wanted.group(1)}, and drasp reads only "
            "tensors and plain containers from .pt files (torch.load with weights_only=True); use a released "
            "LAION-CLAP file"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({str(e).splitlines()[0]})") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: no state dict of tensors (a LAION-CLAP .pt holds one under 'state_dict')")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _check_towers(state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse, before the network is built, a state dict that lacks one of CLAP's towers."""
    absent = [p for p in CLAP_PARTS if not any(k.startswith(p) for k in state)]
    if absent:
        found = sorted({k.split(".")[0] for k in state})
        raise CheckpointError(
            f"{path}: not a LAION-CLAP state dict: no {', '.join(p + '*' for p in absent)} keys "
            f"(its keys start with {', '.join(found[:4])}{', ...' if len(found) > 4 else ''})"
        )


def _load_state(net: ClapNet, state: dict[str, torch.Tensor], path: Path | None, variant: str) -> None:
    """Load ``state`` into ``net`` strictly, after dropping the parts drasp does not build."""
    expected = net.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(UNUSED_PREFIXES)}
    if POSITION_IDS not in expected:
        state.pop(POSITION_IDS, None)
    elif POSITION_IDS not in state:
        state[POSITION_IDS] = expected[POSITION_IDS]
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    resized = sorted(
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    )
    if missing or unexpected or resized:
        hint = (
            "fusion checkpoints are not supported; use a non-fusion one"
            if any("fusion" in k for k in unexpected)
            else f"is it a LAION-CLAP {variant} checkpoint? (HTSAT-tiny: e.g. 630k-audioset-best.pt; "
            "HTSAT-base: e.g. music_audioset_epoch_15_esc_90.14.pt)"
        )
        report = _key_report(missing, unexpected, resized)
        raise CheckpointError(f"{path}: does not fit CLAP {variant}: {report}; {hint}")
    net.load_state_dict(state, strict=True)


def _key_report(missing: list[str], unexpected: list[str], resized: list[str], few: int = 3) -> str:
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("with other shapes", resized)):
        if keys:
            more = f" (+{len(keys) - few} more)" if len(keys) > few else ""
            parts.append(f"{len(keys)} key{'s' if len(keys) > 1 else ''} {what}, e.g. {', '.join(keys[:few])}{more}")
    return "; ".join(parts)


def load_roberta_tokenizer(location: str, vocab_size: int) -> Any:
    """The RoBERTa tokenizer at ``location`` (a Hub id or a local folder), checked to be usable.

    Loaded from local files only when the Hub is offline (``HF_HUB_OFFLINE=1``). Raises
    :class:`CheckpointError` when it cannot be loaded, when it turns ordinary English words into
    ``<unk>`` (transformers 5.x returns such a 5-token tokenizer, silently, for a Hub id it
    cannot fetch), or when it has more tokens than the text encoder has embeddings.
    """
    from huggingface_hub import constants
    from transformers import RobertaTokenizer

    offline = constants.is_offline_mode()
    try:
        tokenizer = RobertaTokenizer.from_pretrained(location, local_files_only=offline)
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"RoBERTa tokenizer {location!r} could not be loaded: {str(e).splitlines()[0]}") from None
    ids = tokenizer(TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]
    if not ids or tokenizer.unk_token_id in ids:
        where = " (the Hub is offline and it is not in the cache)" if offline and not Path(location).is_dir() else ""
        raise CheckpointError(
            f"RoBERTa tokenizer {location!r} turns ordinary words into {tokenizer.unk_token} "
            f"(a vocabulary of {len(tokenizer)} tokens){where}; download roberta-base's tokenizer on a connected "
            "machine, or set the backbone option 'tokenizer' to a local folder holding it"
        )
    if len(tokenizer) > vocab_size:
        raise CheckpointError(
            f"RoBERTa tokenizer {location!r} has {len(tokenizer)} tokens, more than the text encoder's "
            f"{vocab_size} embeddings: it is not roberta-base's"
        )
    return tokenizer
