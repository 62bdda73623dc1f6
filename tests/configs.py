"""A small TOML writer for the test configurations (lorad.toml and lora.toml)."""

from __future__ import annotations

import json
from typing import Any


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def dump_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer for the test configurations (tables after plain keys)."""
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{prefix}{key}"
            plain = {k: v for k, v in value.items() if not isinstance(v, dict)}
            if plain or not value:
                lines += ["", f"[{name}]"]
                lines += [f"{k} = {toml_value(v)}" for k, v in plain.items()]
            nested = {k: v for k, v in value.items() if isinstance(v, dict)}
            if nested:
                lines.append(dump_toml(nested, f"{name}."))
    return "\n".join(lines) + "\n"


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
