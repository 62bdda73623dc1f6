"""Kohya's output files, read by name: epoch models, state folders and sample images.

Names (kohya.md): NAME-000003.safetensors per saved epoch, NAME.safetensors at the end,
NAME-000003-state/ and NAME-state/ with train_state.json, sample/NAME_e000003_00_<time>_<seed>.png
per epoch and sample/NAME_000500_00_<time>_<seed>.png per step.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from lorad.system.safetensors import HeaderError, read_header


def safetensors_problem(path: Path) -> str | None:
    """None when the file is a complete safetensors file, else what is wrong with it."""
    try:
        header = read_header(path)
    except (OSError, HeaderError) as error:
        return f"{path.name} cannot be read as safetensors ({error})"
    end = 0
    for name, entry in header.table.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(entry["data_offsets"][1]))
        except (KeyError, TypeError, IndexError, ValueError):
            return f"{path.name}: tensor {name!r} has no data offsets"
    described = 8 + header.length + end
    if described != header.file_size:
        return (f"{path.name} is {header.file_size} bytes but its header describes {described}: "
                "the file is truncated or corrupt")
    return None


@dataclass(frozen=True)
class EpochFile:
    path: Path
    epoch: int | None  # None: the final model (its epoch is the run's last)


@dataclass(frozen=True)
class StateFolder:
    path: Path
    epoch: int  # Kohya's own count (train_state.json's current_epoch)


@dataclass(frozen=True)
class Sample:
    path: Path
    epoch: int | None  # set for end-of-epoch samples
    step: int | None  # set for every-N-steps samples
    prompt: int


def epoch_files(output_dir: Path, name: str) -> list[EpochFile]:
    numbered = re.compile(re.escape(name) + r"-(\d{6})\.safetensors")
    found = []
    for path in sorted(output_dir.glob("*.safetensors")):
        if path.name == f"{name}.safetensors":
            found.append(EpochFile(path, None))
        elif match := numbered.fullmatch(path.name):
            found.append(EpochFile(path, int(match.group(1))))
    return found


def state_folders(output_dir: Path) -> list[StateFolder]:
    found = []
    for folder in sorted(output_dir.glob("*-state")):
        try:
            state = json.loads((folder / "train_state.json").read_text())
            found.append(StateFolder(folder, int(state["current_epoch"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a state folder cut short by a crash
    return found


def samples(output_dir: Path, name: str) -> list[Sample]:
    pattern = re.compile(re.escape(name) + r"_(e?)(\d{6})_(\d{2})(?:_.*)?\.png")
    found = []
    for path in sorted((output_dir / "sample").glob("*.png")):
        match = pattern.fullmatch(path.name)
        if not match:
            continue
        number, prompt = int(match.group(2)), int(match.group(3))
        if match.group(1):
            found.append(Sample(path, number, None, prompt))
        else:
            found.append(Sample(path, None, number, prompt))
    return found
