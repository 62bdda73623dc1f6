"""`lorad kohya install`: sd-scripts at a commit lorad is tested with, in its own virtual
environment (made with the python that runs lorad), ready for lorad. One function per step;
every step can run again (a rerun goes on where the last one failed), and every command is an
argument list, never a shell string.

The torch step installs `torch_spec` (default: torch and torchvision from PyTorch's index: the
CUDA build when nvidia-smi finds a GPU, else the CPU one); an empty spec skips it (the tests do).
pip reads its usual PIP_* variables (PIP_NO_INDEX=1, PIP_FIND_LINKS=...) in every step.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lorad.system.gpus import gpus

REPO = "https://github.com/kohya-ss/sd-scripts.git"
REF = "48d368fa"  # the sd-scripts commit lorad is tested with (see README)
TORCH = "torch torchvision"
TORCH_INDEX = {True: "https://download.pytorch.org/whl/cu128",
               False: "https://download.pytorch.org/whl/cpu"}
HELP_TIMEOUT = 600.0
ACCELERATE_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: 'NO'
downcast_bf16: 'no'
gpu_ids: all
machine_rank: 0
main_training_function: main
mixed_precision: 'no'
num_machines: 1
num_processes: 1
rdzv_backend: static
same_network: true
use_cpu: {use_cpu}
"""


class InstallError(Exception):
    """A step failed; the message names the step and the command that retries it."""


@dataclass(frozen=True)
class Install:
    folder: Path
    repo: str = REPO
    ref: str = REF
    torch_spec: str = TORCH

    @property
    def python(self) -> Path:
        return self.folder / "venv" / "bin" / "python"

    def kohya_lines(self) -> str:
        return f'[kohya]\nsd_scripts = "{self.folder}"\npython = "{self.python}"\n'


def run(step: str, argv: list[str], cwd: Path | None = None, timeout: float | None = None
        ) -> str:
    """Run one command of a step; its output, or InstallError with the command to retry."""
    try:
        done = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, errors="replace", timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        failed = str(error)
    else:
        if done.returncode == 0:
            return done.stdout
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        failed = f"exit status {done.returncode}: {lines[-1].strip() if lines else 'no output'}"
    where = f"cd {shlex.quote(str(cwd))} && " if cwd else ""
    raise InstallError(f"step {step} failed ({failed}); retry it with: {where}"
                       f"{shlex.join(argv)}; or run lorad kohya install again (finished steps "
                       "are skipped)")


def clone(inst: Install) -> str:
    if (inst.folder / ".git").is_dir():
        return f"{inst.folder} is a clone already"
    run("clone", ["git", "clone", "--quiet", inst.repo, str(inst.folder)])
    return f"cloned {inst.repo} into {inst.folder}"


def checkout(inst: Install) -> str:
    git = ["git", "-C", str(inst.folder)]
    known = subprocess.run([*git, "rev-parse", "--quiet", "--verify", f"{inst.ref}^{{commit}}"],
                           capture_output=True).returncode == 0
    if not known:
        run("checkout", [*git, "fetch", "--quiet", "origin"])
    run("checkout", ["git", "-C", str(inst.folder), "checkout", "--quiet", "--detach", inst.ref])
    return f"at {inst.ref}"


def venv(inst: Install) -> str:
    if inst.python.exists():
        return f"{inst.python.parent.parent} exists"
    run("venv", [sys.executable, "-m", "venv", str(inst.folder / "venv")])
    return f"made {inst.folder / 'venv'}"


def torch_args(spec: str, gpu: bool) -> list[str]:
    """pip's arguments for torch: the spec, from PyTorch's CUDA or CPU index."""
    return [*spec.split(), "--index-url", TORCH_INDEX[gpu]]


def torch(inst: Install) -> str:
    if not inst.torch_spec:
        return "skipped (no torch requirement given)"
    gpu = bool(gpus())
    run("torch", [str(inst.python), "-m", "pip", "install", "--quiet",
                  *torch_args(inst.torch_spec, gpu)])
    return f"{inst.torch_spec} ({'CUDA' if gpu else 'CPU'} build)"


def requirements(inst: Install) -> str:
    run("requirements", [str(inst.python), "-m", "pip", "install", "--quiet", "-r",
                         "requirements.txt"], cwd=inst.folder)
    return "sd-scripts' requirements.txt installed"


def accelerate_config(inst: Install) -> str:
    """accelerate's default single-process configuration, unless one exists (lorad passes its
    launch options itself; this serves running the trainer by hand)."""
    hf_home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    path = hf_home / "accelerate" / "default_config.yaml"
    if path.exists():
        return f"{path} exists, kept"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ACCELERATE_CONFIG.format(use_cpu="false" if gpus() else "true"))
    return f"wrote {path}"


def check(inst: Install) -> str:
    run("check", [str(inst.python), "train_network.py", "--help"], cwd=inst.folder,
        timeout=HELP_TIMEOUT)
    return "train_network.py --help answers"


STEPS: list[tuple[str, Callable[[Install], str]]] = [
    ("clone", clone), ("checkout", checkout), ("venv", venv), ("torch", torch),
    ("requirements", requirements), ("accelerate", accelerate_config), ("check", check)]


def install(inst: Install, echo: Callable[[str], None]) -> None:
    for number, (name, step) in enumerate(STEPS, 1):
        echo(f"[{number}/{len(STEPS)}] {name}: {step(inst)}")
