"""`lorad doctor`: checks the configuration and the machine, one line per finding.

Each check says what it found and what to do about it, with a status: OK, WARN (lorad works, but
not as well as it could) or FAIL (lorad cannot do its work). Nothing is changed (the claiming
check moves an empty temporary folder out of the inbox and back), and nothing is sent unless a
test notification is asked for. Checks are generators so that the command prints
each line as soon as it is known (starting Kohya's trainer takes a while).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lorad.delivery.notify import build_apprise, check_urls, masked
from lorad.inbox.watcher import filesystem_type, needs_polling
from lorad.settings import ConfigError, ModelSettings, Settings, find_config, load_settings
from lorad.system.children import child_env
from lorad.system.gpus import gpus as visible_gpus
from lorad.training.kohya.command import SCRIPTS
from lorad.training.kohya.gui_preset import GuiPresetError, load_gui_preset

OK, WARN, FAIL = "OK", "WARN", "FAIL"
FAMILY_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL"}

GB = 1e9
# What one training leaves in state_dir and the outbox, by base-model family. Assumed: the
# presets' epochs (6 for SD1.5, 16 for SDXL) of a network_dim 32 LoRA, each epoch with the
# training state Kohya saves beside it (weights in fp32 and the optimizer's moments), plus the
# dataset; the outbox gets every epoch and the samples.
TRAINING_NEEDS_GB = {"sd15": (2.0, 0.5), "sdxl": (15.0, 4.0)}
NO_SPACE_GB = 1.0  # under this, not even a dataset can be prepared
# The guide's figures for training with the presets (kohya.md); less works, more slowly.
GPU_NEEDS_GB = {"sd15": 8, "sdxl": 10}
# Below the usual defaults; lorad itself needs one watch and one instance.
INOTIFY_MINIMUM = {"max_user_watches": 8192, "max_user_instances": 128}
HELP_TIMEOUT = 180.0  # Kohya's scripts import torch and diffusers before parsing arguments
MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
MODEL_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
PROBE_PREFIX = ".lorad-doctor-"  # a hidden name: a running daemon's watcher never takes it
PROC_DEVICES = Path("/proc/devices")
UVM_NODE = Path("/dev/nvidia-uvm")


@dataclass(frozen=True)
class Check:
    status: str  # OK, WARN or FAIL
    name: str
    message: str


def run_checks(config_path: Path | None, *, send_test: bool = False) -> Iterator[Check]:
    """Every check, in order; a configuration that cannot be read is the only line."""
    try:
        settings = load_settings(config_path)
        source = find_config(config_path)
    except ConfigError as error:
        found = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        yield Check(FAIL, "configuration",
                    f"{found}; fix it (the other checks need a valid configuration)")
        return
    where = source or "the LORAD_* environment variables"
    yield Check(OK, "configuration", f"{where} is valid")
    yield from folders(settings)
    yield from watching(settings)
    yield from disk_space(settings)
    yield from kohya(settings)
    yield from presets(settings)
    yield from models(settings)
    yield blip(settings)
    yield from gpus(settings)
    on_cpu = cpu_training(settings)
    if on_cpu is not None:
        yield on_cpu
    uvm = uvm_device()
    if uvm is not None:
        yield uvm
    yield from notifications(settings, send_test)


# ---- helpers --------------------------------------------------------------------------------
def user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        return f"uid {os.geteuid()}"


def existing(path: Path) -> Path:
    """path, or its nearest ancestor that exists."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def contains(parent: Path, child: Path) -> bool:
    parent, child = parent.resolve(), child.resolve()
    return parent == child or parent in child.parents


def families(settings: Settings) -> set[str]:
    return {model.family for model in settings.models.values()} or {"sd15"}


def largest_family(settings: Settings) -> str:
    return "sdxl" if "sdxl" in families(settings) else "sd15"


def hub_name(name: str) -> bool:
    """Looks like "owner/model" on the Hugging Face hub rather than a local path."""
    return bool(HUB_NAME.fullmatch(name)) and not name.lower().endswith(MODEL_FILE_SUFFIXES)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


# ---- folders --------------------------------------------------------------------------------
def folder_paths(settings: Settings) -> dict[str, Path]:
    return {"inbox": settings.inbox, "outbox": settings.outbox, "state_dir": settings.state_dir,
            "failed": settings.failed_dir}


def folders(settings: Settings) -> Iterator[Check]:
    for key, path in folder_paths(settings).items():
        yield folder(key, path, in_state_dir=contains(settings.state_dir, path))
    found = layout(settings)
    yield found
    if found.status == OK:
        yield claim_move(settings)


def folder(key: str, path: Path, in_state_dir: bool) -> Check:
    if path.is_dir():
        if os.access(path, os.W_OK | os.X_OK):
            return Check(OK, key, f"{path} exists and {user()} can write to it")
        return Check(FAIL, key, f"{path} is not writable by {user()}; give that user write "
                                "access (chown or chmod), or run lorad as its owner")
    if path.exists():
        return Check(FAIL, key, f"{path} is a file, not a folder; remove it or point {key} "
                                "elsewhere")
    parent = existing(path)
    creatable = os.access(parent, os.W_OK | os.X_OK)
    if in_state_dir and creatable:
        return Check(OK, key, f"{path} does not exist yet; lorad creates it when it starts")
    if in_state_dir:
        return Check(WARN, key, f"{path} does not exist and {user()} cannot create it in "
                                f"{parent}; the systemd unit's StateDirectory= creates it, "
                                f"otherwise create it (mkdir -p) for {user()}")
    if creatable:
        return Check(WARN, key, f"{path} does not exist yet; create it now (lorad would when it "
                                "starts, but the systemd unit's ReadWritePaths= needs it first)")
    return Check(FAIL, key, f"{path} does not exist and {user()} cannot create it in {parent}; "
                            f"create it (mkdir -p) and give {user()} write access")


def layout(settings: Settings) -> Check:
    """No folder inside another (failed inside state_dir, its default, excepted)."""
    named = folder_paths(settings)
    clashes = []
    for (key_a, a), (key_b, b) in itertools.combinations(named.items(), 2):
        nested_failed = key_a == "state_dir" and key_b == "failed" and a.resolve() != b.resolve()
        if (contains(a, b) or contains(b, a)) and not nested_failed:
            clashes.append(f"{key_a} ({a}) and {key_b} ({b})")
    if clashes:
        return Check(FAIL, "folder layout", f"{'; '.join(clashes)} overlap; give each its own "
                                            "folder, none inside another")
    return Check(OK, "folder layout", "inbox, outbox, state_dir and failed do not overlap")


def claim_move(settings: Settings) -> Check:
    """Claiming's move, tried for real: an empty folder renamed from the inbox into the work area
    and back. A rename can fail across filesystems, and also across two mounts of one (a bind
    mount), which comparing device numbers cannot tell."""
    inbox = settings.inbox
    area = settings.work_dir if settings.work_dir.is_dir() else settings.state_dir
    if not (inbox.is_dir() and area.is_dir()):
        return Check(WARN, "claiming", f"cannot try moving a folder from the inbox ({inbox}) "
                                       f"into {area} before both exist; create them, then run "
                                       "lorad doctor again")
    try:
        probe = Path(tempfile.mkdtemp(prefix=PROBE_PREFIX, dir=inbox))
    except OSError as error:
        return Check(FAIL, "claiming", f"cannot create a folder in the inbox ({inbox}): "
                                       f"{error.strerror}; give {user()} write access to it")
    moved = area / probe.name
    try:
        os.rename(probe, moved)
        os.rename(moved, probe)
    except OSError as error:
        return claim_move_failed(error, inbox, area)
    finally:
        for leftover in (probe, moved):
            with contextlib.suppress(FileNotFoundError):
                leftover.rmdir()
    return Check(OK, "claiming", f"a folder moved from the inbox ({inbox}) into {area} with one "
                                 "rename, so claiming is instant (this runs outside the systemd "
                                 "unit's sandbox: there, the inbox and state_dir must share one "
                                 "ReadWritePaths= entry)")


def claim_move_failed(error: OSError, inbox: Path, area: Path) -> Check:
    if error.errno == errno.EXDEV:
        return Check(WARN, "claiming", f"a folder cannot be renamed from the inbox ({inbox}) "
                                       f"into {area}: they are on different filesystems or "
                                       "mounts, so each folder is copied, verified and then "
                                       "deleted instead (slower, and twice the space meanwhile); "
                                       "put the inbox and state_dir on one filesystem to make "
                                       "claiming instant")
    return Check(FAIL, "claiming", f"moving a folder from the inbox ({inbox}) into {area} "
                                   f"failed: {error.strerror or error}; lorad could not take any "
                                   f"folder, so give {user()} write access to both")


# ---- watching the inbox -------------------------------------------------------------------
def watch_mode(settings: Settings) -> tuple[str | None, str]:
    """The inbox's filesystem type and the mode the watcher will use ("native" or "poll")."""
    fs_type = filesystem_type(existing(settings.inbox))
    mode = settings.watch.mode
    if mode == "auto":
        mode = "poll" if needs_polling(fs_type) else "native"
    return fs_type, mode


def watching(settings: Settings) -> Iterator[Check]:
    fs_type, mode = watch_mode(settings)
    how = ("watched with inotify" if mode == "native"
           else f"polled every {settings.watch.poll_seconds:g} s")
    configured = f'watch.mode = "{settings.watch.mode}"'
    if fs_type is None:
        yield Check(WARN, "watching", f"cannot tell the inbox's filesystem type, so it is {how} "
                                      f"({configured}); set watch.mode = \"poll\" if it is a "
                                      "network share")
    elif mode == "native" and needs_polling(fs_type):
        yield Check(WARN, "watching", f"the inbox is on {fs_type}, where inotify misses changes "
                                      f"made by other machines, but {configured}; set it to "
                                      '"auto" or "poll"')
    else:
        yield Check(OK, "watching", f"the inbox is on {fs_type}: {how} ({configured})")
    state_fs = filesystem_type(existing(settings.state_dir))
    if needs_polling(state_fs):
        yield Check(WARN, "state_dir", f"{settings.state_dir} is on {state_fs}, where SQLite's "
                                       "locking is unreliable; put state_dir on a local disk")
    yield inotify_limits(mode)


def inotify_limits(mode: str, proc: Path = Path("/proc/sys/fs/inotify")) -> Check:
    if mode == "poll":
        return Check(OK, "inotify", "not needed: the inbox is polled")
    try:
        found = {name: int((proc / name).read_text()) for name in INOTIFY_MINIMUM}
    except (OSError, ValueError):
        return Check(WARN, "inotify", f"cannot read the limits in {proc}; if inotify cannot be "
                                      "used lorad says so in its log and polls instead")
    shown = ", ".join(f"{name} = {value}" for name, value in found.items())
    low = [name for name, value in found.items() if value < INOTIFY_MINIMUM[name]]
    if low:
        return Check(WARN, "inotify", f"{shown}: low, and shared by every program of the same "
                                      "user; raise them with sysctl (e.g. fs.inotify."
                                      f"{low[0]}={INOTIFY_MINIMUM[low[0]] * 4}), else lorad "
                                      "falls back to polling when they run out")
    return Check(OK, "inotify", f"{shown}; lorad needs one of each (it watches the inbox itself, "
                                "not its subfolders)")


# ---- disk space ---------------------------------------------------------------------------
def disk_space(settings: Settings) -> Iterator[Check]:
    family = largest_family(settings)
    state_need, outbox_need = TRAINING_NEEDS_GB[family]
    state, outbox = existing(settings.state_dir), existing(settings.outbox)
    if state.stat().st_dev == outbox.stat().st_dev:
        yield space(f"state_dir and outbox (one filesystem, {state})", state,
                    state_need + outbox_need, family)
        return
    yield space(f"state_dir ({settings.state_dir})", state, state_need, family)
    yield space(f"outbox ({settings.outbox})", outbox, outbox_need, family)


def space(what: str, path: Path, need: float, family: str) -> Check:
    free = shutil.disk_usage(path).free / GB
    found = (f"{free:.1f} GB free for {what}, where one {FAMILY_NAMES[family]} training needs "
             f"about {need:g} GB (assumed: the preset's epochs of a network_dim 32 LoRA, each with "
             "its saved training state)")
    if free < NO_SPACE_GB:
        return Check(FAIL, "disk space", f"{found}; free some space before starting lorad")
    if free < need:
        return Check(WARN, "disk space", f"{found}; free some space, or a training may stop "
                                         "with a full disk")
    return Check(OK, "disk space", found)


# ---- Kohya ----------------------------------------------------------------------------------
def kohya(settings: Settings) -> Iterator[Check]:
    sd_scripts = settings.kohya.sd_scripts
    if not sd_scripts.is_dir():
        yield Check(FAIL, "Kohya", f"kohya.sd_scripts ({sd_scripts}) does not exist; clone "
                                   "kohya-ss/sd-scripts there or point kohya.sd_scripts at your "
                                   "checkout")
        return
    scripts = [SCRIPTS[family] for family in sorted(families(settings))]
    missing = [script for script in scripts if not (sd_scripts / script).is_file()]
    if missing:
        yield Check(FAIL, "Kohya", f"{sd_scripts} has no {', '.join(missing)}; it is not a "
                                   "sd-scripts checkout, so fix kohya.sd_scripts")
        return
    python = settings.kohya.python_path()
    if shutil.which(python) is None:
        yield Check(FAIL, "Kohya", f"kohya.python ({python}) is not an executable; create "
                                   "Kohya's virtual environment as its README says, or set "
                                   "kohya.python")
        return
    yield trainer_starts(settings, python)
    yield accelerate(settings, python)


def presets(settings: Settings) -> Iterator[Check]:
    for name, path, families in preset_files(settings):
        yield gui_preset(name, path, families)


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


# ---- base models ----------------------------------------------------------------------------
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
    except (OSError, ValueError) as error:
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
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if not 2 <= length <= MAX_HEADER_BYTES:
            raise ValueError("its header length is not plausible")
        raw = handle.read(length)
    if len(raw) < length:
        raise ValueError("its header is truncated")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("its header is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError("its header is not a table of tensors")
    if any(key.startswith("conditioner.embedders.1.") for key in header):
        return "sdxl"
    if any(key.startswith("cond_stage_model.transformer.") for key in header):
        return "sd15"
    return None


# ---- BLIP -----------------------------------------------------------------------------------
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


# ---- GPUs -----------------------------------------------------------------------------------
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


# ---- notifications --------------------------------------------------------------------------
def notifications(settings: Settings, send_test: bool) -> Iterator[Check]:
    notify = settings.notify
    if not notify.urls and not notify.config:
        yield Check(WARN, "notifications", "none configured, so nobody is told when a LoRA is "
                                           "ready; add an Apprise URL to notify.urls")
        return
    problems = check_urls(notify)
    for problem in problems:
        yield Check(FAIL, "notifications", f"{problem}; fix it (Apprise's documentation shows "
                                           "each service's URL)")
    if not problems:
        targets = [masked(url) for url in notify.urls]
        if notify.config:
            targets.append(f"the targets in {notify.config}")
        yield Check(OK, "notifications", f"{', '.join(targets)} understood (nothing sent)")
    if send_test:
        yield test_notification(settings, problems)


def test_notification(settings: Settings, problems: list[str]) -> Check:
    if problems:
        return Check(WARN, "test notification", "not sent; fix the notification targets first")
    failed, sent = [], []
    for service in build_apprise(settings.notify).find("all"):
        for name in ("socket_connect_timeout", "socket_read_timeout"):
            setattr(service, name, settings.notify.timeout_seconds)
        delivered = service.notify(title="lorad: test notification",
                                   body="lorad doctor --send-test: notifications work.")
        (sent if delivered else failed).append(service.url(privacy=True))
    if failed:
        return Check(FAIL, "test notification", f"could not deliver to {', '.join(failed)}; "
                                                "check the URL's credentials and the network")
    return Check(OK, "test notification", f"delivered to {', '.join(sent)}")
