"""drasp: MOS prediction for generated audio with Dual-Resolution Attentive Statistics Pooling.

The public API is loaded lazily so that ``import drasp_cli`` (and ``drasp --help``) does not
import torch.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "MosModel", "ModelConfig", "load_model", "save_model"]


def __getattr__(name: str):
    if name in ("MosModel", "ModelConfig"):
        from . import model

        return getattr(model, name)
    if name in ("load_model", "save_model"):
        from . import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'drasp_cli' has no attribute {name!r}")
