"""What the machine's NVIDIA GPUs are, read from nvidia-smi (the daemon never imports torch)."""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_mib: int
    compute_capability: float

    @property
    def bf16(self) -> bool:
        """bfloat16 needs Ampere (compute capability 8.0) or newer."""
        return self.compute_capability >= 8.0


@functools.cache
def gpus() -> tuple[Gpu, ...]:
    """The GPUs nvidia-smi lists; empty when there is no driver or no nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ()
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name,memory.total,compute_cap",
             "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    found = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4:
            continue
        try:
            found.append(Gpu(int(parts[0]), parts[1], int(float(parts[2])), float(parts[3])))
        except ValueError:
            continue
    return tuple(found)


def bf16_supported(index: int) -> bool:
    """True when GPU `index` does bf16; False when it does not or cannot be asked."""
    return any(g.index == index and g.bf16 for g in gpus())


def any_visible() -> bool:
    """Whether nvidia-smi lists any GPU (else Kohya, and torch under it, runs on the CPU)."""
    return bool(gpus())
