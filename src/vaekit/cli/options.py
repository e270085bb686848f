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
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
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


def _format_default(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) if value else "none"
    return str(value)


def setting_type(key: str, meta: dict[str, Any]):
    """An argparse ``type=`` that parses and checks a flag's text with its field's own check."""
    from ..config import SettingError, parse_text

    def convert(text: str):
        try:
            return parse_text(key, text, meta)
        except SettingError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = key  # argparse names it in "invalid KEY value" messages
    return convert


def add_setting(group, key: str, f, flag: str | None = None) -> None:
    """One flag generated from a settings dataclass field: type, check, choices and help (with
    the default) all come from the field."""
    from dataclasses import MISSING

    from ..config import _choices, allowed_text

    meta = f.metadata
    flag = flag or meta.get("flag") or "--" + key.replace("_", "-")
    default = f.default if f.default is not MISSING else f.default_factory()
    help_text = f"{meta['help']} [default: {_format_default(default)}]"
    if meta["kind"] == "bool":
        group.add_argument(flag, action="store_true", dest=key, help=help_text)
        group.add_argument("--no-" + flag[2:], action="store_false", dest=key, help=f"turn {flag} off")
        return
    choices = _choices(meta)
    metavar = meta.get("metavar") or ("{" + ",".join(map(str, choices)) + "}" if choices else key.upper())
    kwargs: dict[str, Any] = dict(dest=key, type=setting_type(key, meta), metavar=metavar, help=help_text)
    if meta.get("const") is not None:
        kwargs.update(nargs="?", const=meta["const"])
    if choices is None and meta["kind"] in ("int", "float") and meta["low"] is not None:
        kwargs["help"] = help_text.replace(" [default", f"; {allowed_text(meta)} [default")
    group.add_argument(flag, **kwargs)


def read_settings_file(path: str) -> dict[str, Any]:
    """A TOML/JSON config file's settings, each checked as the flags are (one line naming the
    file and the setting on a bad value)."""
    from ..config import RunConfig, SettingError

    settings = read_config_file(path)
    try:
        RunConfig.from_settings(settings, where=f"config file {path}")
    except ValueError as err:  # a SettingError, or a size that cannot fit (vaekit.limits)
        raise SettingError(f"config file {path}: {err}") from None
    return settings
