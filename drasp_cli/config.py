"""JSON round trip of the frozen config dataclasses, strict about unknown keys.

>>> from drasp_cli.pooling import PoolingConfig
>>> config_from_dict(PoolingConfig, {"method": "average"})
PoolingConfig(method='average', segment_size=4, attention_dim=None, heads=4, temperatures=None)
>>> config_from_dict(PoolingConfig, {"methd": "average"})
Traceback (most recent call last):
...
drasp_cli.errors.ConfigError: PoolingConfig: unknown key 'methd' (known: method, segment_size, attention_dim, heads, temperatures)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; tuples become lists."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    return plain(config)


def config_from_dict(cls: type[T], data: Any, where: str | None = None) -> T:
    """Build ``cls`` from a dict, recursing into nested config dataclasses.

    Unknown keys raise :class:`ConfigError` naming the key; so does a value of the wrong kind
    where a nested config or a list is expected.
    """
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def _convert(hint: Any, value: Any, where: str) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        for option in options:
            if dataclasses.is_dataclass(option) or typing.get_origin(option) is tuple:
                return _convert(option, value, where)
        return value
    if dataclasses.is_dataclass(hint):
        return config_from_dict(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return tuple(value)
    return value
