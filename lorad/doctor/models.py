"""Base models: each configured one exists (or is a hub name) and is of its configured family,
told from a checkpoint's tensor names or a diffusers folder's pipeline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from lorad.doctor.check import FAIL, FAMILY_NAMES, GB, OK, WARN, Check, hub_name
from lorad.settings import ModelSettings, Settings
from lorad.system.safetensors import HeaderError, read_header


def models(settings: Settings) -> Iterator[Check]:
    if not settings.models:
        yield Check(FAIL, "models", "no [models] table, so there is no base model to train on; "
                                    "add one, e.g. [models.sd15] with path and family")
        return
    for name, model in settings.models.items():
        yield base_model(f"models.{name}", model)


def base_model(name: str, model: ModelSettings) -> Check:
    path = Path(model.path)
    if path.is_file():
        return model_file(name, path, model.family)
    if path.is_dir():
        return model_folder(name, path, model.family)
    if hub_name(model.path):
        return Check(WARN, name, f"{model.path} is not a file or folder here, so Kohya will "
                                 "download it from the Hugging Face hub on first use; download "
                                 "it beforehand if the GPU host has no network")
    return Check(FAIL, name, f"{path} does not exist; fix {name}.path")


def model_file(name: str, path: Path, family: str) -> Check:
    size = f"{path.stat().st_size / GB:.1f} GB"
    if path.suffix.lower() != ".safetensors":
        return Check(OK, name, f"{path} ({size}) exists; its family is not checked (only "
                               ".safetensors headers are read)")
    try:
        found = checkpoint_family(path)
    except (OSError, HeaderError) as error:
        return Check(FAIL, name, f"{path} is not a readable safetensors file ({error}); download "
                                 "it again")
    return family_check(name, f"{path} ({size})", found, family)


def model_folder(name: str, path: Path, family: str) -> Check:
    index = path / "model_index.json"
    try:
        pipeline = json.loads(index.read_text()).get("_class_name", "")
    except (OSError, ValueError, AttributeError):
        return Check(FAIL, name, f"{path} is a folder without a readable model_index.json, so "
                                 "not a diffusers model; point the path at a checkpoint file or "
                                 "a diffusers folder")
    return family_check(name, f"{path} ({pipeline})", "sdxl" if "XL" in pipeline else "sd15",
                        family)


def family_check(name: str, what: str, found: str | None, family: str) -> Check:
    if found is None:
        return Check(WARN, name, f"{what}: its family cannot be told from its contents (is it a "
                                 f"full checkpoint?); make sure family = \"{family}\" is right")
    if found != family:
        return Check(FAIL, name, f"{what} is an {FAMILY_NAMES[found]} model but family = "
                                 f"\"{family}\"; set family = \"{found}\" or use another file")
    return Check(OK, name, f"{what}, an {FAMILY_NAMES[found]} model as configured")


def checkpoint_family(path: Path) -> str | None:
    """"sdxl", "sd15" or None (cannot tell), from the tensor names in the header alone."""
    tensors = read_header(path).table
    if any(key.startswith("conditioner.embedders.1.") for key in tensors):
        return "sdxl"
    if any(key.startswith("cond_stage_model.transformer.") for key in tensors):
        return "sd15"
    return None
