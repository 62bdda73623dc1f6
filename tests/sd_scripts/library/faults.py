"""Fault injection for lorad's tests, driven by the JSON control file named in $FAKE_SD_SCRIPTS.

    {"step_seconds": 0.0, "epoch_seconds": 0.0,
     "faults": [{"kind": "crash", "at_step": 1, "times": 1, "unless": {"max_batch_size": 1}}]}

Kinds: crash, hang, oom, silent and ignore_sigterm happen at global step `at_step` (default 1,
counted as the progress bar counts); nomodel and corrupt concern the saved model files. A fault
fires in at most `times` runs (omitted: every run), counted in `<control>.count.json` across runs;
it does not fire when every condition listed in `unless` holds. Every invocation appends a line to
`<control>.runs.jsonl` (also when the control file itself does not exist), and every invocation
that ends on its own (not killed by a signal) a line to `<control>.exits.jsonl`.
"""

import argparse
import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

ENV_VAR = "FAKE_SD_SCRIPTS"
KINDS = ("crash", "hang", "oom", "nomodel", "corrupt", "silent", "ignore_sigterm")
STEP_KINDS = ("crash", "hang", "oom", "silent", "ignore_sigterm")
CONTROL_KEYS = {"step_seconds", "epoch_seconds", "sample_seconds", "model_bytes", "faults",
                "samples_from"}
FAULT_KEYS = {"kind", "at_step", "times", "unless", "output_name"}
RECORDED_ENV = (
    "CUDA_VISIBLE_DEVICES", "NOTIFY_SOCKET", "PYTHONUNBUFFERED", "ACCELERATE_MIXED_PRECISION",
    "OMP_NUM_THREADS", "HF_HUB_OFFLINE",
)


UNLESS_CONDITIONS = {
    "max_batch_size": lambda args, limit: args.train_batch_size <= limit,
    "gradient_checkpointing": lambda args, want: bool(args.gradient_checkpointing) == want,
    "cache_latents_to_disk": lambda args, want: bool(args.cache_latents_to_disk) == want,
    "mixed_precision": lambda args, want: args.mixed_precision == want,
}


def process_started() -> float:
    """When this process began (its exec, before Python started), in time.time()'s seconds:
    /proc/self/stat gives it in clock ticks since boot (10 ms steps). Now, where that is unknown."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        since_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time()
    return time.time() - (since_boot - ticks / os.sysconf("SC_CLK_TCK"))


@dataclass
class Fault:
    index: int
    kind: str
    at_step: int = 1
    times: int | None = None
    unless: dict[str, object] = field(default_factory=dict)
    output_name: str | None = None

    def spared(self, args: argparse.Namespace) -> bool:
        if self.output_name is not None and args.output_name != self.output_name:
            return True
        return bool(self.unless) and all(
            UNLESS_CONDITIONS[key](args, want) for key, want in self.unless.items()
        )


def _check_keys(where: str, found: dict[str, object], allowed: set[str]) -> None:
    unknown = set(found) - allowed
    if unknown:
        raise ValueError(f"{ENV_VAR} control file, {where}: unknown keys {sorted(unknown)}")


def _parse_fault(index: int, raw: dict[str, object]) -> Fault:
    where = f"faults[{index}]"
    _check_keys(where, raw, FAULT_KEYS)
    _check_keys(f"{where}.unless", raw.get("unless", {}), set(UNLESS_CONDITIONS))
    if raw.get("kind") not in KINDS:
        raise ValueError(f"{ENV_VAR} control file, {where}: kind must be one of {KINDS}")
    return Fault(index, raw["kind"], raw.get("at_step", 1), raw.get("times"), raw.get("unless", {}),
                 raw.get("output_name"))


class Control:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.step_seconds = 0.0
        self.epoch_seconds = 0.0
        self.sample_seconds = 0.0
        self.model_bytes = 0
        self.faults: list[Fault] = []
        self.fired: set[int] = set()
        # {"<epoch>": ["/abs/picture.png", ...]}: that epoch's samples are these files, one per
        # prompt line in turn, instead of solid colours (a face that comes and goes, for lorad's
        # likeness score).
        self.samples_from: dict[str, list[str]] = {}
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
            _check_keys("top level", raw, CONTROL_KEYS)
            self.step_seconds = float(raw.get("step_seconds", 0.0))
            self.epoch_seconds = float(raw.get("epoch_seconds", 0.0))
            self.sample_seconds = float(raw.get("sample_seconds", 0.0))
            self.model_bytes = int(raw.get("model_bytes", 0))
            self.faults = [_parse_fault(i, fault) for i, fault in enumerate(raw.get("faults", []))]
            self.samples_from = dict(raw.get("samples_from", {}))

    @classmethod
    def from_env(cls) -> "Control":
        return cls(os.environ.get(ENV_VAR) or None)

    def record_run(self, script: str, argv: list[str]) -> None:
        self._append("runs", {
            "argv": argv,
            "script": script,
            "cwd": os.getcwd(),
            "env": {name: os.environ.get(name) for name in RECORDED_ENV},
            "pid": os.getpid(),
            "started": process_started(),
        })

    @contextlib.contextmanager
    def recording_exit(self) -> Iterator[None]:
        """Append {"pid", "exited", "status"} to <control>.exits.jsonl when the block ends, however
        it ends, except by a signal that kills the process (nothing of it runs then)."""
        status = 1
        try:
            yield
            status = 0
        except SystemExit as done:
            status = done.code if isinstance(done.code, int) else int(done.code is not None)
            raise
        finally:
            self._append("exits", {"pid": os.getpid(), "exited": time.time(), "status": status})

    def _append(self, record: str, line: dict[str, object]) -> None:
        if not self.path:
            return
        with open(f"{self.path}.{record}.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    def seconds_per_step(self, steps_per_epoch: int) -> float:
        return self.step_seconds + self.epoch_seconds / max(steps_per_epoch, 1)

    def step_fault(self, args: argparse.Namespace, step: int) -> Fault | None:
        """The crash, hang, oom, silent or ignore_sigterm fault that fires at this global step,
        if any."""
        for fault in self.faults:
            if fault.kind in STEP_KINDS and fault.at_step == step and self._fire(fault, args):
                return fault
        return None

    def fires(self, kind: str, args: argparse.Namespace) -> bool:
        """Whether a nomodel or corrupt fault applies to this run (counted once per run)."""
        return any(fault.kind == kind and self._fire(fault, args) for fault in self.faults)

    def _fire(self, fault: Fault, args: argparse.Namespace) -> bool:
        if fault.index in self.fired:
            return True
        if fault.spared(args):
            return False
        with open(f"{self.path}.count.json", "a+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            counts = json.loads(f.read() or "{}")
            key = str(fault.index)
            if fault.times is not None and counts.get(key, 0) >= fault.times:
                return False
            counts[key] = counts.get(key, 0) + 1
            f.seek(0)
            f.truncate()
            f.write(json.dumps(counts))
        self.fired.add(fault.index)
        return True
