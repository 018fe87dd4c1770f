"""Command-line flags built from the config dataclasses, so a flag's default cannot drift from the
engine's: `EngineConfig` (engine/engine_config.py) and `ModelOverrides` (engine/config.py).

Every dataclass field becomes `--field-name` (plus the aliases its metadata lists), typed from its
default, with the field's help text and its default written into the help. `serve`, `generate` and
`diffuserve bench offline/http` all declare their engine and model flags here.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from .engine_config import EngineConfig, parse_bytes
from .model_config import ModelOverrides


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def int_list(text: str) -> tuple[int, ...]:
    """'1,2, 3' -> (1, 2, 3); '' -> () (an empty list, e.g. no stop ids)."""
    return tuple(int(t) for t in text.split(",") if t.strip())


def _flag_type(f: dataclasses.Field):
    meta = f.metadata
    if meta.get("bytes"):
        return parse_bytes
    if meta.get("int_list"):
        return int_list
    if "choices" in meta:
        return str
    kind = f.type if isinstance(f.type, type) else str(f.type)
    for name, typ in (("int", int), ("float", float), ("str", str)):
        if kind is typ or (isinstance(kind, str) and kind.split(" ")[0] == name):
            return typ
    raise TypeError(f"no command-line type for field {f.name}: {f.type}")


def _help(f: dataclasses.Field) -> str:
    meta = f.metadata
    if "default_help" in meta:
        shown = meta["default_help"]
    elif f.default is None:
        return meta["help"]
    elif meta.get("bytes"):
        shown = format_bytes(f.default)
    else:
        shown = str(f.default)
    return f"{meta['help']} (default: {shown})".replace("%", "%%")


def flag_name(f: dataclasses.Field) -> str:
    return "--" + f.name.replace("_", "-")


def add_dataclass_args(group, cls, exclude: tuple[str, ...] = ()) -> None:
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        group.add_argument(flag_name(f), *f.metadata.get("aliases", ()), dest=f.name, type=_flag_type(f),
                           default=f.default, choices=f.metadata.get("choices"), help=_help(f))


def add_engine_args(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """The `EngineConfig` fields as flags (those in `exclude` are set by the command itself)."""
    add_dataclass_args(parser.add_argument_group("engine"), EngineConfig, exclude)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The `ModelOverrides` fields as flags."""
    add_dataclass_args(parser.add_argument_group("model overrides"), ModelOverrides)


def _values(cls, args: argparse.Namespace) -> dict[str, Any]:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def engine_config_from_args(args: argparse.Namespace, **fixed: Any) -> EngineConfig:
    """The EngineConfig the flags describe; `fixed` sets the fields a command owns (excluded flags).
    A bad value raises ValueError naming the field."""
    return EngineConfig(**{**_values(EngineConfig, args), **fixed})


def model_overrides_from_args(args: argparse.Namespace) -> ModelOverrides:
    return ModelOverrides(**_values(ModelOverrides, args))


def engine_argv(config: EngineConfig, exclude: tuple[str, ...] = ()) -> list[str]:
    """The flags that rebuild `config` in another process (a server the benchmarks start):
    only the fields that differ from their defaults."""
    argv: list[str] = []
    for f in dataclasses.fields(EngineConfig):
        value = getattr(config, f.name)
        if f.name not in exclude and value != f.default:
            argv += [flag_name(f), str(value)]
    return argv
