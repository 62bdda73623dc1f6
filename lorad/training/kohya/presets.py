"""lorad's training presets, one TOML file per model family, shipped as package data."""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any

from lorad.training.kohya.args import FAMILIES


def load_preset(family: str) -> dict[str, Any]:
    """The preset's Kohya arguments for family ("sd15" or "sdxl"), a fresh dict on every call."""
    if family not in FAMILIES:
        raise ValueError(f"no preset for model family {family!r}; expected one of "
                         f"{', '.join(FAMILIES)}")
    folder = resources.files("lorad.training.kohya").joinpath("presets")
    text = folder.joinpath(f"{family}.toml").read_text("utf-8")
    return tomllib.loads(text)
