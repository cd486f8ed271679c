"""Configs in and out: the one strict ``from_dict`` check and YAML reading/writing of dataclasses.

Every frozen config dataclass of ctblend (method configs, ``UNetConfig``, ``VPSchedule``,
``TrainConfig``, ``BenchConfig``, …) builds from plain data through :func:`strict_fields`, so an
unknown key is one clear ``ValueError`` naming it and the known ones, never silently dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ctblend.io.output import write_text

__all__ = ["from_dict", "read_yaml_config", "strict_fields", "write_yaml_config"]

T = TypeVar("T")


def strict_fields(cls: type, data: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``data`` as a dict, after checking that every key is a field of the dataclass ``cls``;
    otherwise ``ValueError("unknown <what> [...]; known: [...]")``."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {what} {sorted(unknown)}; known: {sorted(known)}")
    return dict(data)


def from_dict(cls: type[T], data: Mapping[str, Any], what: str) -> T:
    """``cls(**data)`` with the strict key check of :func:`strict_fields`."""
    return cls(**strict_fields(cls, data, what))


def read_yaml_config(cls: type[T], path: str | Path, what: str) -> T:
    """``cls.from_dict`` of a YAML mapping, with one error naming the file on bad input."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read {what} ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of {what}")
    try:
        return cls.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


def write_yaml_config(config: Any, path: str | Path) -> Path:
    """``config.to_dict()`` as YAML at ``path`` (atomic), in field order."""
    return write_text(Path(path), yaml.safe_dump(config.to_dict(), sort_keys=False))
