"""BLIP: the captioning model is a local folder or already in the Hugging Face cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lorad.doctor.check import FAIL, OK, WARN, Check, hub_name
from lorad.settings import Settings


def hub_cache() -> Path:
    """The Hugging Face hub cache, found the way huggingface_hub finds it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "huggingface" / "hub"


def blip(settings: Settings) -> Check:
    caption = settings.caption
    if not caption.enabled:
        return Check(OK, "BLIP", "captioning is off (caption.enabled = false): images without a "
                                 "caption of their own get the token alone")
    if caption.python and shutil.which(caption.python) is None:
        return Check(FAIL, "BLIP", f"caption.python ({caption.python}) is not an executable; fix "
                                   "it or leave it empty to use lorad's own python")
    local = Path(caption.model)
    if local.is_dir():
        if (local / "config.json").is_file():
            return Check(OK, "BLIP", f"{local} is a local model folder")
        return Check(FAIL, "BLIP", f"{local} has no config.json, so it is not a model folder; "
                                   "fix caption.model")
    if not hub_name(caption.model):
        return Check(FAIL, "BLIP", f"caption.model ({caption.model}) does not exist; fix it")
    cached = hub_cache() / ("models--" + caption.model.replace("/", "--"))
    if any((cached / "snapshots").glob("*/config.json")):
        return Check(OK, "BLIP", f"{caption.model} is in the Hugging Face cache ({cached})")
    return Check(WARN, "BLIP", f"{caption.model} is not in the Hugging Face cache ({hub_cache()}), "
                               "so it will be downloaded on first use; run lorad where it can "
                               "reach huggingface.co once, or set caption.model to a local folder")
