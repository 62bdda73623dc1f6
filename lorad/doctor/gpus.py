"""GPUs: each configured one is visible, with its memory against the guide's figures; and CUDA's
nvidia-uvm module and device node, which the systemd unit needs before it starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lorad.doctor.check import FAIL, FAMILY_NAMES, OK, WARN, Check, largest_family
from lorad.settings import Settings
from lorad.system.gpus import gpus as visible_gpus

# The guide's figures for training with the presets (kohya.md); less works, more slowly.
GPU_NEEDS_GB = {"sd15": 8, "sdxl": 10}
PROC_DEVICES = Path("/proc/devices")
UVM_NODE = Path("/dev/nvidia-uvm")


def gpus(settings: Settings) -> Iterator[Check]:
    found = {gpu.index: gpu for gpu in visible_gpus()}
    if not found:
        yield Check(WARN, "GPU", "no NVIDIA GPU is visible (nvidia-smi is missing or lists "
                                 "none); lorad can prepare and caption on the CPU, but training "
                                 "needs a GPU and its driver")
        return
    family = largest_family(settings)
    need = GPU_NEEDS_GB[family]
    for index in settings.gpus:
        gpu = found.get(index)
        if gpu is None:
            yield Check(FAIL, f"GPU {index}", f"gpus lists {index} but nvidia-smi shows only "
                                              f"{sorted(found)}; fix gpus")
            continue
        memory = gpu.memory_mib / 1024
        what = (f"{gpu.name}, {memory:.0f} GB, bf16 "
                f"{'yes' if gpu.bf16 else 'no (fp16 is used)'}")
        if memory < need:
            yield Check(WARN, f"GPU {index}", f"{what}: less than the {need} GB the guide gives "
                                              f"for {FAMILY_NAMES[family]}, so trainings step down "
                                              "the out-of-memory ladder (slower)")
        else:
            yield Check(OK, f"GPU {index}", what)


def cpu_training(settings: Settings) -> Check | None:
    """With no GPU visible Kohya trains on the CPU: say that it is very slow, and that fp16,
    which crashes there, must not be forced. None where a GPU is visible."""
    if visible_gpus():
        return None
    message = ("no GPU is visible, so Kohya trains on the CPU, in full precision "
               "(mixed_precision \"auto\" becomes \"no\"): very slow, hours per epoch at 512 px "
               "where a GPU takes minutes; give lorad an NVIDIA GPU and its driver")
    if settings.kohya.mixed_precision == "fp16":
        message += ('; and kohya.mixed_precision = "fp16" crashes on the CPU (c10::Half != '
                    'float): set it to "auto" or "no"')
    return Check(WARN, "training on the CPU", message)


def char_devices(text: str) -> set[str]:
    """The character device groups listed in /proc/devices (its first section)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("Block devices"):
            break
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            names.add(parts[1])
    return names


def uvm_device(devices: Path = PROC_DEVICES, node: Path = UVM_NODE) -> Check | None:
    """CUDA's memory manager, nvidia-uvm: its module and its device node, both needed before the
    service starts (DeviceAllow= is resolved then, and NoNewPrivileges= keeps the setuid
    nvidia-modprobe from creating the node on demand). None without any NVIDIA driver."""
    try:
        groups = char_devices(devices.read_text())
    except OSError:
        return None
    if not any(name.startswith("nvidia") for name in groups):
        return None
    problems = []
    if "nvidia-uvm" not in groups:
        problems.append(f"{devices} lists no nvidia-uvm: the module is not loaded, and the "
                        "unit's DeviceAllow=char-nvidia-uvm only sees what was loaded when the "
                        "service started; load it at boot (echo nvidia-uvm > "
                        "/etc/modules-load.d/nvidia-uvm.conf)")
    if not node.exists():
        problems.append(f"{node} does not exist and the service cannot create it; create it "
                        "at boot as root with nvidia-modprobe -u -c=0")
    if problems:
        return Check(WARN, "nvidia-uvm", "; ".join(problems) + " (else CUDA fails in lorad's "
                                         "trainers until lorad is restarted)")
    return Check(OK, "nvidia-uvm", f"the module is loaded and {node} exists, as CUDA needs")
