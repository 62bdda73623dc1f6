"""What every doctor check gives (Check: a status, a name, a message) and what several use."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lorad.settings import Settings

OK, WARN, FAIL = "OK", "WARN", "FAIL"
FAMILY_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL"}
GB = 1e9
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
MODEL_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class Check:
    status: str  # OK, WARN or FAIL
    name: str
    message: str


def existing(path: Path) -> Path:
    """path, or its nearest ancestor that exists."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def families(settings: Settings) -> set[str]:
    return {model.family for model in settings.models.values()} or {"sd15"}


def largest_family(settings: Settings) -> str:
    return "sdxl" if "sdxl" in families(settings) else "sd15"


def hub_name(name: str) -> bool:
    """Looks like "owner/model" on the Hugging Face hub rather than a local path."""
    return bool(HUB_NAME.fullmatch(name)) and not name.lower().endswith(MODEL_FILE_SUFFIXES)
