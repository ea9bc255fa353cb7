"""Reading YAML configs and resolving the paths they name (relative to the config's folder):
the one place ``nnpot train``, ``nnpot cv`` and ``nnpot learn`` configs go through."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration problem, with the offending key or file in the message."""


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping a YAML config file holds (empty file: {}); a ConfigError names the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    return values or {}


def resolve_path(value: str | os.PathLike, base: str | os.PathLike) -> Path:
    """``value`` (``~`` expanded) as an absolute path, a relative one taken from ``base``."""
    path = Path(value).expanduser()
    return (path if path.is_absolute() else Path(base) / path).resolve()


def existing_file(key: str, value: str | os.PathLike, base: str | os.PathLike) -> str:
    """The absolute path of the existing file ``key`` names; a ConfigError if there is none."""
    path = resolve_path(value, base)
    if not path.is_file():
        raise ConfigError(f"{key}: file {value} not found (looked at {path})")
    return str(path)


def folder(key: str, value: str | os.PathLike, base: str | os.PathLike) -> str:
    """The absolute path of the folder ``key`` names; an existing file there is a ConfigError."""
    path = resolve_path(value, base)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}: {path} exists and is not a folder")
    return str(path)
