"""`lorad init`: a commented starting configuration (the example's text) with the folders and
the values found on this machine, and the folders created."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lorad.settings import home_defaults
from lorad.setup.detect import Kohya, Model, find_gpus, find_kohya, find_models
from lorad.setup.tomledit import set_key, toml_string

TEMPLATE = Path(__file__).with_name("lorad.toml")
NO_MODEL = """\
# No base model was found in the usual folders: name yours here, then `lorad doctor`.
# [models.sd15]
# path = "/srv/models/realisticVisionV51_v51VAE.safetensors"
# family = "sd15"
"""


class InitError(Exception):
    """The configuration was not written; the message says why and what to do."""


@dataclass
class Written:
    path: Path
    notes: list[str] = field(default_factory=list)  # what was found, and what was not


def models_text(models: list[Model]) -> str:
    if not models:
        return NO_MODEL
    return "\n".join(f"[models.{m.name}]\npath = {toml_string(m.path)}\nfamily = \"{m.family}\""
                     f"   # {m.how}\n" for m in models)


def render(kohya: Kohya | None, models: list[Model], gpus: list[int]) -> str:
    """The example configuration with this machine's values."""
    text = TEMPLATE.read_text()
    text = re.sub(r"\A(#[^\n]*\n)+", "# lorad's configuration, written by `lorad init`; "
                  "README's \"Configuration keys\" says what each key does.\n", text)
    for key, value in home_defaults().items():
        text = set_key(text, "", key, toml_string(value))
    text = set_key(text, "", "gpus", "[" + ", ".join(map(str, gpus or [0])) + "]")
    if models:
        text = set_key(text, "", "default_model", toml_string(models[0].name))
    if kohya:
        text = set_key(text, "kohya", "sd_scripts", toml_string(kohya.sd_scripts))
        python = kohya.python or kohya.sd_scripts / "venv" / "bin" / "python"
        text = set_key(text, "kohya", "python", toml_string(python))
    start = text.index("[models.")
    return text[:start] + models_text(models) + "\n" + text[text.index("[notify]"):]


def write_config(folder: Path, *, force: bool = False) -> Written:
    path = folder / "lorad.toml"
    if path.exists() and not force:
        raise InitError(f"{path} exists already; edit it, or run lorad init --force to replace "
                        "it with a new one")
    kohya = find_kohya()
    models = find_models(kohya.sd_scripts if kohya else None)
    gpus = find_gpus()
    folder.mkdir(parents=True, exist_ok=True)
    for made in home_defaults().values():
        made.mkdir(parents=True, exist_ok=True)
    path.write_text(render(kohya, models, gpus))
    return Written(path, notes(kohya, models, gpus))


def notes(kohya: Kohya | None, models: list[Model], gpus: list[int]) -> list[str]:
    found = [f"GPUs: {', '.join(map(str, gpus))}" if gpus else "no GPU found (gpus = [0])"]
    if kohya:
        found.append(f"Kohya: {kohya.sd_scripts}"
                     + ("" if kohya.python else " (no venv yet: lorad kohya install makes it)"))
    else:
        found.append("no Kohya checkout found: lorad kohya install ~/sd-scripts --write-config "
                     "installs one and sets [kohya]")
    found += [f"model {m.name}: {m.path} ({m.family}, {m.how})" for m in models]
    if not models:
        found.append("no base model found: add a [models.NAME] table (the file says how)")
    return found
