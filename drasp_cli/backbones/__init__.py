"""Backbone registry: names map to classes by import path, so listing or validating backbone
names never imports a model package (``drasp --help`` stays fast and offline)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from .base import Backbone, BackboneConfig

BACKBONES: dict[str, str] = {
    "mel": "drasp_cli.backbones.mel:MelBackbone",
    "clap": "drasp_cli.backbones.clap:ClapBackbone",
    "aes": "drasp_cli.backbones.aes:AesBackbone",
}


def backbone_class(name: str) -> type[Backbone]:
    """The class registered under ``name``."""
    try:
        target = BACKBONES[name]
    except KeyError:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def build_backbone(config: BackboneConfig) -> Backbone:
    """Build (cheaply, without weights) the backbone a config names."""
    return backbone_class(config.name)(config)
