"""What `lorad init` can find on this machine: a Kohya checkout in the usual places, base models
beside it or in the usual web UI folders, and the GPUs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lorad.doctor.models import checkpoint_family
from lorad.system.gpus import gpus
from lorad.system.safetensors import HeaderError

TRAIN_SCRIPT = "train_network.py"


def kohya_places() -> list[Path]:
    home = Path.home()
    return [home / "sd-scripts", home / "kohya_ss" / "sd-scripts", Path("/opt/sd-scripts"),
            Path("/opt/kohya_ss/sd-scripts")]


def model_places(sd_scripts: Path | None) -> list[Path]:
    home = Path.home()
    places = [home / "stable-diffusion-webui" / "models" / "Stable-diffusion",
              home / "stable-diffusion-webui-forge" / "models" / "Stable-diffusion",
              home / "ComfyUI" / "models" / "checkpoints", Path("/srv/models")]
    return ([sd_scripts / "models"] if sd_scripts else []) + places


@dataclass(frozen=True)
class Kohya:
    sd_scripts: Path
    python: Path | None  # its environment's python, when there is one


@dataclass(frozen=True)
class Model:
    name: str  # the [models.NAME] table
    path: Path
    family: str
    how: str  # how the family was told


def find_kohya() -> Kohya | None:
    """The first usual place holding train_network.py, with its venv's python (sd-scripts'
    own venv, or the kohya_ss GUI's one level up)."""
    for folder in kohya_places():
        if (folder / TRAIN_SCRIPT).is_file():
            pythons = [f / "venv" / "bin" / "python" for f in (folder, folder.parent)]
            return Kohya(folder, next((p for p in pythons if p.exists()), None))
    return None


def family_of(path: Path) -> tuple[str, str]:
    """The family ("sd15" or "sdxl") and how it was told: the safetensors header's tensor names,
    else the file name ("xl" in it: SDXL), else SD1.5."""
    try:
        found = checkpoint_family(path) if path.suffix == ".safetensors" else None
    except (OSError, HeaderError):
        found = None
    if found:
        return found, "from its tensor names"
    if "xl" in path.name.lower():
        return "sdxl", "guessed from its name"
    return "sd15", "guessed (nothing says SDXL): check it"


def find_models(sd_scripts: Path | None) -> list[Model]:
    """Checkpoints in the usual folders, each named after its family (sd15, sdxl) for the first
    of that family, else after its file."""
    found: list[Model] = []
    names: set[str] = set()
    for folder in model_places(sd_scripts):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.ckpt")):
            family, how = family_of(path)
            name = family if family not in names else re.sub(r"\W", "_", path.stem.lower())
            if name in names:
                continue
            names.add(name)
            found.append(Model(name, path, family, how))
    return found


def find_gpus() -> list[int]:
    return [gpu.index for gpu in gpus()]
