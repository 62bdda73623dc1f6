"""Kohya: the sd-scripts checkout, its python starting the trainer, accelerate, and the kohya_ss
GUI presets read as the trainings that use them read them."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from lorad.doctor.check import FAIL, OK, Check, families, largest_family
from lorad.settings import Settings
from lorad.system.children import child_env
from lorad.training.kohya.command import SCRIPTS
from lorad.training.kohya.gui_preset import GuiPresetError, load_gui_preset

HELP_TIMEOUT = 180.0  # Kohya's scripts import torch and diffusers before parsing arguments


def kohya(settings: Settings) -> Iterator[Check]:
    problem = setup_problem(settings)
    if problem is not None:
        yield Check(FAIL, "Kohya", problem)
        return
    python = settings.kohya.python_path()
    yield trainer_starts(settings, python)
    yield accelerate(settings, python)


def setup_problem(settings: Settings) -> str | None:
    """Why no training can start, from what is on disk alone (the folder, its scripts, its
    python; nothing is run), or None. The daemon asks this at start and at every reload."""
    sd_scripts = settings.kohya.sd_scripts
    if not sd_scripts.is_dir():
        return (f"kohya.sd_scripts ({sd_scripts}) does not exist; clone kohya-ss/sd-scripts "
                "there (lorad kohya install DIR) or point kohya.sd_scripts at your checkout")
    scripts = [SCRIPTS[family] for family in sorted(families(settings))]
    missing = [script for script in scripts if not (sd_scripts / script).is_file()]
    if missing:
        return (f"{sd_scripts} has no {', '.join(missing)}; it is not a sd-scripts checkout, "
                "so fix kohya.sd_scripts")
    python = settings.kohya.python_path()
    if shutil.which(python) is None:
        return (f"kohya.python ({python}) is not an executable; create Kohya's virtual "
                "environment (lorad kohya install DIR does), or set kohya.python")
    return None


def presets(settings: Settings) -> Iterator[Check]:
    for name, path, used_by in preset_files(settings):
        yield gui_preset(name, path, used_by)


def gui_preset(name: str, path: Path, families: list[str]) -> Check:
    """A kohya_ss GUI preset read as the trainings of each model family it applies to read it."""
    try:
        for family in families or [None]:
            preset = load_gui_preset(path, family)
    except GuiPresetError as error:
        return Check(FAIL, name, f"{error}; every training it applies to would fail on it: fix "
                                 f"the file or remove {name}")
    used = f"{path} is used: {len(preset.args)} Kohya arguments"
    if not preset.notes:
        return Check(OK, name, f"{used}, no key ignored")
    return Check(OK, name, f"{used}; {len(preset.notes)} ignored: {'; '.join(preset.notes)}")


def preset_files(settings: Settings) -> Iterator[tuple[str, Path, list[str]]]:
    """Each configured GUI preset, with the model families whose trainings use it."""
    if settings.kohya.preset:
        families = sorted({model.family for model in settings.models.values()})
        yield "kohya.preset", settings.kohya.preset, families
    for name, model in settings.models.items():
        if model.preset:
            yield f"models.{name}.preset", model.preset, [model.family]


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def starts(settings: Settings, argv: list[str], timeout: float) -> tuple[bool, str]:
    """Run argv the way the trainer runs (cwd, environment); (worked, what happened)."""
    started = time.monotonic()
    try:
        done = subprocess.run(argv, cwd=settings.kohya.sd_scripts,
                              env=child_env(settings.kohya.env), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"did not answer within {timeout:g} s"
    except OSError as error:
        return False, f"could not be started ({error})"
    if done.returncode != 0:
        return False, f"exited with status {done.returncode}: {last_line(done.stderr)}"
    return True, f"answered in {time.monotonic() - started:.1f} s"


def trainer_starts(settings: Settings, python: str) -> Check:
    # sdxl_train_network.py imports train_network.py: starting it checks both.
    script = SCRIPTS[largest_family(settings)]
    argv = [python, str(settings.kohya.sd_scripts / script), "--help"]
    worked, what = starts(settings, argv, HELP_TIMEOUT)
    if worked:
        return Check(OK, "Kohya", f"{script} --help with {python} {what}")
    return Check(FAIL, "Kohya", f"{script} --help with {python} {what}; install sd-scripts' "
                                "requirements into that environment")


def accelerate(settings: Settings, python: str) -> Check:
    if not settings.kohya.accelerate:
        return Check(OK, "accelerate", "not used (kohya.accelerate = false): the trainer runs "
                                       "with python directly")
    argv = [python, "-m", "accelerate.commands.launch", "--help"]
    worked, what = starts(settings, argv, HELP_TIMEOUT)
    if worked:
        return Check(OK, "accelerate", f"accelerate launch --help {what}")
    return Check(FAIL, "accelerate", f"accelerate launch --help {what}; install accelerate into "
                                     "Kohya's environment or set kohya.accelerate = false")
