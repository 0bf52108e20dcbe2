"""Sweep specs on the Python side: the JSON spec-file format (as a dict) to a `SweepSpec` message.

This module owns the dict form of a sweep spec, the one `coordinator submit --spec FILE` reads:
the fields of `sweep.v1.SweepSpec`, with `seeds` as a list or a range text ("0..5" end excluded,
"0..=4", "0,1,7"). Values are only *shaped* here (types, known keys, seeds texts, numbers that
fit their wire types); whether they make a sensible sweep (epochs >= 1, known variants, ...) is
the coordinator's to decide, and it answers INVALID_ARGUMENT when they do not. Grid and choice
values become text exactly as `coordinator submit --spec` makes them (see `param_value`), so a
spec file gives the same jobs through either client.

    {"name": "lr-search", "seeds": "0..3", "epochs": 20,
     "command": {"template": "python3 train.py --lr {lr} --seed {seed}",
                 "grid": {"lr": [0.001, 0.01]}},
     "objective": {"metric": "val_acc", "mode": "max"}}

Every error is a `ValueError` whose message starts with the dotted path of the field at fault.
"""

from __future__ import annotations

import json
import math
import os
from decimal import Decimal
from typing import Any, Mapping, Union

from ._gen import sweep_pb2

__all__ = ["BUILTIN_VARIANTS", "MAX_SEEDS", "float_text", "load_spec", "param_value", "parse_seeds", "spec_from_dict"]

#: The built-in CNN's loss variants, in the experiment's order (the default when a spec names
#: neither variants nor a command, as `coordinator submit --spec` does).
BUILTIN_VARIANTS = ("natural_hardmax", "natural_softmax", "multi_softmax", "normal_lr1e-3", "normal_lr1e-2")
#: Most seeds one sweep may hold (the coordinator's limit).
MAX_SEEDS = 10_000

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1

_TOP_KEYS = {
    "name",
    "variants",
    "seeds",
    "epochs",
    "batch_size",
    "learning_rates",
    "seed_offsets",
    "data",
    "max_attempts",
    "command",
    "objective",
}
_DATA_KEYS = {"train_limit", "test_limit", "augment", "width_multiplier", "bn_group"}
_COMMAND_KEYS = {"template", "grid", "samples", "distributions", "workdir", "env", "timeout_seconds"}
_OBJECTIVE_KEYS = {"metric", "mode"}
_DISTRIBUTION_KINDS = ("uniform", "log_uniform", "int_uniform", "choice")
_MODES = {"max": sweep_pb2.Objective.MODE_MAX, "min": sweep_pb2.Objective.MODE_MIN}

SpecLike = Union[sweep_pb2.SweepSpec, Mapping[str, Any]]


def _fail(path: str, why: str) -> ValueError:
    return ValueError(f"{path}: {why}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _uint(value: Any, path: str, limit: int = _U32) -> int:
    if not _is_int(value):
        raise _fail(path, f"expected a non-negative integer, got {value!r}")
    if not 0 <= value <= limit:
        raise _fail(path, f"{value} is not in 0..={limit}")
    return value


def _number(value: Any, path: str) -> float:
    if not _is_number(value):
        raise _fail(path, f"expected a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise _fail(path, f"{value!r} is not finite")
    return number


def _text(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _fail(path, f"expected a string, got {value!r}")
    return value


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, f"expected an object, got {value!r}")
    for key in value:
        if not isinstance(key, str):
            raise _fail(path, f"keys must be strings, got {key!r}")
    return value


def _known(value: Mapping[str, Any], allowed: set[str], path: str) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise _fail(where, f"unknown field (known: {', '.join(sorted(allowed))})")


def _given(value: Mapping[str, Any], key: str) -> bool:
    return value.get(key) is not None


def float_text(value: float) -> str:
    """A float as the coordinator CLI writes a spec file's number (Rust's `f64` Display): the
    shortest digits that read back as the same float, never in exponent form, without a ".0"
    (0.001 -> "0.001", 1e-05 -> "0.00001", 2.0 -> "2"). The same spec file then gives the same
    parameter values, and so the same jobs, whichever client submits it."""
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def param_value(value: Any, path: str) -> str:
    """A grid or choice value as the wire's text, as the coordinator CLI turns a spec file's
    JSON value into one: strings as they are, integers in decimal, floats by `float_text`,
    booleans as "true" / "false". Anything else (None, lists, NaN) is a ValueError."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(path, f"{value!r} is not finite")
        return float_text(value)
    raise _fail(path, f"expected a string, a number or a boolean, got {value!r}")


def parse_seeds(text: str) -> list[int]:
    """Seeds from "0..5" (end excluded), "0..=4" or "0,1,7" (at most `MAX_SEEDS`), as
    `coordinator submit --seeds` reads them. Raises ValueError("seeds: ...")."""
    text = text.strip()

    def number(part: str) -> int:
        part = part.strip()
        if not part.isdigit() or not part.isascii():
            raise _fail("seeds", f"{text!r}: {part!r} is not a non-negative integer")
        n = int(part)
        if n > _U64:
            raise _fail("seeds", f"{text!r}: {part} does not fit a 64-bit seed")
        return n

    if ".." in text:
        start_text, end_text = text.split("..", 1)
        inclusive = end_text.startswith("=")
        if inclusive:
            end_text = end_text[1:]
        start, end = number(start_text), number(end_text)
        if inclusive:
            end += 1
            if end > _U64:
                raise _fail("seeds", f"{text!r}: range too large")
        if end <= start:
            raise _fail("seeds", f"{text!r}: empty range")
        if end - start > MAX_SEEDS:
            raise _fail("seeds", f"{text!r}: more than the {MAX_SEEDS} seeds a sweep may hold")
        return list(range(start, end))
    seeds = [number(part) for part in text.split(",") if part.strip()]
    if not seeds:
        raise _fail("seeds", f"{text!r}: no seed")
    if len(seeds) > MAX_SEEDS:
        raise _fail("seeds", f"{text!r}: more than the {MAX_SEEDS} seeds a sweep may hold")
    return seeds


def _seeds(value: Any) -> list[int]:
    if isinstance(value, str):
        return parse_seeds(value)
    if isinstance(value, (list, tuple)):
        if not value:
            raise _fail("seeds", "at least one seed is required")
        if len(value) > MAX_SEEDS:
            raise _fail("seeds", f"more than the {MAX_SEEDS} seeds a sweep may hold")
        return [_uint(seed, f"seeds[{i}]", _U64) for i, seed in enumerate(value)]
    raise _fail("seeds", f'expected a list of integers or a text such as "0..5", got {value!r}')


def _data(value: Any, out: sweep_pb2.DataOptions) -> None:
    data = _mapping(value, "data")
    _known(data, _DATA_KEYS, "data")
    if _given(data, "train_limit"):
        out.train_limit = _uint(data["train_limit"], "data.train_limit")
    if _given(data, "test_limit"):
        out.test_limit = _uint(data["test_limit"], "data.test_limit")
    if _given(data, "augment"):
        if not isinstance(data["augment"], bool):
            raise _fail("data.augment", f"expected true or false, got {data['augment']!r}")
        out.augment = data["augment"]
    if _given(data, "width_multiplier"):
        out.width_multiplier = _number(data["width_multiplier"], "data.width_multiplier")
    if _given(data, "bn_group"):
        out.bn_group = _uint(data["bn_group"], "data.bn_group")


def _values_list(value: Any, path: str) -> list[str]:
    if not isinstance(value, (list, tuple)):
        raise _fail(path, f"expected a list of values, got {value!r}")
    return [param_value(v, f"{path}[{i}]") for i, v in enumerate(value)]


def _range(value: Any, path: str, out: sweep_pb2.Range, integers: bool = False) -> None:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _fail(path, f"expected [low, high], got {value!r}")
    for i, bound in enumerate(value):
        if integers and not _is_int(bound):
            raise _fail(f"{path}[{i}]", f"expected an integer, got {bound!r}")
    out.low = _number(value[0], f"{path}[0]")
    out.high = _number(value[1], f"{path}[1]")


def _distribution(value: Any, path: str, out: sweep_pb2.Distribution) -> None:
    dist = _mapping(value, path)
    _known(dist, set(_DISTRIBUTION_KINDS), path)
    if len(dist) != 1:
        raise _fail(path, f"expected exactly one of {', '.join(_DISTRIBUTION_KINDS)}, got {sorted(dist)}")
    (kind, body), = dist.items()
    if kind == "choice":
        out.choice.values.extend(_values_list(body, f"{path}.choice"))
    else:
        _range(body, f"{path}.{kind}", getattr(out, kind), integers=kind == "int_uniform")


def _command(value: Any, out: sweep_pb2.CommandSpec) -> None:
    command = _mapping(value, "command")
    _known(command, _COMMAND_KEYS, "command")
    if not _given(command, "template"):
        raise _fail("command.template", "required in a command sweep")
    out.template = _text(command["template"], "command.template")
    if _given(command, "grid"):
        for name, values in _mapping(command["grid"], "command.grid").items():
            out.grid[name].values.extend(_values_list(values, f"command.grid.{name}"))
    if _given(command, "samples"):
        out.samples = _uint(command["samples"], "command.samples")
    if _given(command, "distributions"):
        for name, dist in _mapping(command["distributions"], "command.distributions").items():
            _distribution(dist, f"command.distributions.{name}", out.distributions[name])
    if _given(command, "workdir"):
        out.workdir = _text(command["workdir"], "command.workdir")
    if _given(command, "env"):
        for key, val in _mapping(command["env"], "command.env").items():
            out.env[key] = _text(val, f"command.env.{key}")
    if _given(command, "timeout_seconds"):
        out.timeout_seconds = _uint(command["timeout_seconds"], "command.timeout_seconds")


def _objective(value: Any, out: sweep_pb2.Objective) -> None:
    objective = _mapping(value, "objective")
    _known(objective, _OBJECTIVE_KEYS, "objective")
    if not _given(objective, "metric"):
        raise _fail("objective.metric", "required")
    out.metric = _text(objective["metric"], "objective.metric")
    mode = "max" if objective.get("mode") is None else objective["mode"]  # as the CLI: left out = max
    if mode not in _MODES:
        raise _fail("objective.mode", f'expected "max" or "min", got {mode!r}')
    out.mode = _MODES[mode]


def spec_from_dict(spec: Mapping[str, Any]) -> sweep_pb2.SweepSpec:
    """The `SweepSpec` a spec dict (the JSON spec-file format) describes.

    `name` and `seeds` are required; a key set to None counts as left out. Without `variants`
    and `command` the sweep trains all five built-in variants. Raises ValueError naming the
    field for unknown keys, wrong types, bad seeds texts and numbers that do not fit.
    """
    spec = _mapping(spec, "spec")
    _known(spec, _TOP_KEYS, "")
    out = sweep_pb2.SweepSpec()
    if not _given(spec, "name"):
        raise _fail("name", "required")
    out.name = _text(spec["name"], "name")
    if not _given(spec, "seeds"):
        raise _fail("seeds", 'required (a list of integers or a text such as "0..5")')
    out.seeds.extend(_seeds(spec["seeds"]))
    if _given(spec, "variants"):
        variants = spec["variants"]
        if not isinstance(variants, (list, tuple)):
            raise _fail("variants", f"expected a list of variant names, got {variants!r}")
        out.variants.extend(_text(v, f"variants[{i}]") for i, v in enumerate(variants))
    elif not _given(spec, "command"):
        out.variants.extend(BUILTIN_VARIANTS)
    if _given(spec, "epochs"):
        out.epochs = _uint(spec["epochs"], "epochs")
    if _given(spec, "batch_size"):
        out.batch_size = _uint(spec["batch_size"], "batch_size")
    if _given(spec, "learning_rates"):
        for variant, lr in _mapping(spec["learning_rates"], "learning_rates").items():
            out.learning_rates[variant] = _number(lr, f"learning_rates.{variant}")
    if _given(spec, "seed_offsets"):
        for variant, offset in _mapping(spec["seed_offsets"], "seed_offsets").items():
            out.seed_offsets[variant] = _uint(offset, f"seed_offsets.{variant}", _U64)
    if _given(spec, "data"):
        _data(spec["data"], out.data)
    if _given(spec, "max_attempts"):
        out.max_attempts = _uint(spec["max_attempts"], "max_attempts")
    if _given(spec, "command"):
        _command(spec["command"], out.command)
    if _given(spec, "objective"):
        _objective(spec["objective"], out.objective)
    return out


def to_spec(spec: SpecLike) -> sweep_pb2.SweepSpec:
    """`spec` as a `SweepSpec`: a message is used as it is, a dict goes through `spec_from_dict`."""
    if isinstance(spec, sweep_pb2.SweepSpec):
        return spec
    if isinstance(spec, Mapping):
        return spec_from_dict(spec)
    raise TypeError(f"expected a sweep_pb2.SweepSpec or a dict, got {type(spec).__name__}")


def load_spec(path: Union[str, "os.PathLike[str]"]) -> sweep_pb2.SweepSpec:
    """Reads a JSON spec file (as `coordinator submit --spec` does) into a `SweepSpec`."""
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{os.fspath(path)}: not JSON: {e}") from None
    return spec_from_dict(data)
