"""Shared pieces of argument parsing: config files and flag merging."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number > 0, got 0")
    return value


def read_config_file(path: str) -> dict[str, Any]:
    """Settings from a TOML or JSON file; keys are flag names (dashes or underscores)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {path} does not exist")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(p.read_text())
        else:
            data = tomllib.loads(p.read_text())
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"config file {path} cannot be parsed: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a table of settings")
    if "train" in data and isinstance(data["train"], dict) and len(data) == 1:
        data = data["train"]  # allow a [train] table
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def explicit(args: argparse.Namespace) -> dict[str, Any]:
    """Only the flags the user typed (parsers use default=SUPPRESS), minus internals."""
    return {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "command"}
