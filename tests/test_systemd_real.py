"""lorad's own unit files under a real systemd: a `systemd --user` manager started by hand
(tests/systemd_manager.py; root only, skipped elsewhere with the reason).

lorad.service and lorad-user.service are installed as shipped, from systemd/ (lorad.service
also once with the opt-in systemd/lorad.service.d/syscall-filter.conf.example), with a drop-in
(test-machine.conf) that changes only what this machine needs, each for the reason given:
- ExecStart= runs this test's python with `-m lorad`, PYTHONPATH= the checkout under test, and a
  lorad.toml on this test's folders (the unit's /usr/local/bin/lorad and /etc/lorad do not exist);
- User=/Group= are emptied: there is no lorad account, lorad runs as root (in the sandbox);
- WatchdogSec=4s and RestartSec=500ms instead of 3min and 10s, for a test that takes seconds;
- StandardOutput=append:FILE: there is no journald, lorad's log goes to a file;
- ExecStopPost= appends each run's $SERVICE_RESULT, $EXIT_CODE and $EXIT_STATUS to a file: the
  manager's own log goes to /dev/console, and a unit's Result= is reset when it restarts;
- ReadWritePaths= and HOME= point at this test's folders, which live under /var/lib, not /tmp
  (PrivateTmp= hides the test's /tmp from the service);
- ProtectHome=tmpfs plus BindReadOnlyPaths= for this python, its venv and the checkout when they
  are under /root or /home (ProtectHome=yes hides them), BindReadOnlyPaths= when under /tmp (as
  in CI); lorad.service only, the user unit has neither ProtectHome= nor PrivateTmp=.
Everything else, the sandbox included, is the shipped unit's. Training uses the stand-in Kohya
(tests/sd_scripts) run by a python wrapper that first records what it sees of the sandbox
(tests/sandbox_probe.py). Every wait polls systemd or a file until a condition holds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.configs import dump_toml, merge
from tests.daemon_process import all_final, status
from tests.systemd_manager import (
    ManagerUnavailable,
    UserManager,
    missing_prerequisite,
    remove_stale,
)
from tests.test_graceful_stop import drop

ROOT = Path(__file__).parent.parent
UNITS = ROOT / "systemd"
SD_SCRIPTS = ROOT / "tests" / "sd_scripts"
PROBE = ROOT / "tests" / "sandbox_probe.py"
WATCHDOG_SECONDS = 4
STATE = ("ActiveState", "SubState", "MainPID", "NRestarts", "Result", "StatusText")


def block_device() -> str | None:
    """A whole-disk block device of this machine (/dev/vda...), for DevicePolicy= to refuse."""
    for entry in sorted(Path("/sys/class/block").glob("*")):
        device = Path("/dev") / entry.name
        if (entry / "partition").exists() or not device.exists():
            continue
        if stat.S_ISBLK(device.stat().st_mode):
            return str(device)
    return None


def made_visible(paths: list[Path]) -> str:
    """Drop-in lines that let the sandbox see `paths` (python, its venv, the checkout):
    ProtectHome= hides /root and /home, PrivateTmp= replaces /tmp and /var/tmp."""
    lines = []
    hidden = [p for p in paths if p.is_relative_to("/root") or p.is_relative_to("/home")
              or p.is_relative_to("/run/user")]
    if hidden:
        lines.append("ProtectHome=tmpfs")
    hidden += [p for p in paths if p.is_relative_to("/tmp") or p.is_relative_to("/var/tmp")]
    lines += [f"BindReadOnlyPaths={p}" for p in sorted(set(hidden))]
    return "\n".join(lines)


class Lorad:
    """One of lorad's units installed in the manager, on folders of its own."""

    def __init__(self, manager: UserManager, folder: Path, unit: str = "lorad.service",
                 name: str = "lorad.service", dropins: dict[str, str] | None = None) -> None:
        self.manager = manager
        self.name = name
        self.srv = folder / "srv"  # inbox, outbox, state: the one ReadWritePaths= entry
        self.srv.mkdir(parents=True)
        self.log = self.srv / "lorad.log"
        self.results = self.srv / "results"
        self.control = self.srv / "fake-sd-scripts.json"
        self.control.write_text("{}")
        self.config = folder / "lorad.toml"
        self.marker = Path(tempfile.gettempdir()) / f"lorad-host-tmp-{uuid.uuid4().hex}"
        self.probes = self.srv / "probes"
        self.probes.mkdir()
        kohya_python = folder / "kohya-python"  # records the sandbox, then is the trainer
        device = block_device() or ""
        kohya_python.write_text(
            f'#!/bin/sh\n"{sys.executable}" "{PROBE}" "{self.probes}/$$.json" "{self.marker}" '
            f'"{device}"\nexec "{sys.executable}" "$@"\n')
        kohya_python.chmod(0o755)
        models = folder / "models"
        models.mkdir()
        (models / "base-sd15.safetensors").write_bytes(b"stand-in base model")
        self.settings: dict[str, Any] = {
            "inbox": str(self.srv / "inbox"), "outbox": str(self.srv / "outbox"),
            "state_dir": str(self.srv / "state"), "default_model": "sd15",
            "watch": {"settle_seconds": 0.5, "rescan_seconds": 2.0},
            "prepare": {"min_images": 3, "few_images": 3},
            "caption": {"enabled": False},
            "kohya": {"sd_scripts": str(SD_SCRIPTS), "python": str(kohya_python),
                      "accelerate": False, "stall_minutes": 1.0, "stop_grace_seconds": 2.0},
            "models": {"sd15": {"path": str(models / "base-sd15.safetensors"),
                                "family": "sd15"}},
        }
        self.write_config()
        shipped = (UNITS / unit).read_text()
        needed = {Path(sys.executable).parent.parent, Path(sys.prefix), Path(sys.base_prefix),
                  Path(sys.executable).resolve().parent.parent, ROOT}
        dropin = f"""[Service]
ExecStart=
ExecStart={sys.executable} -m lorad --config {self.config} run
User=
Group=
WatchdogSec={WATCHDOG_SECONDS}s
RestartSec=500ms
Environment="PYTHONPATH={ROOT}" "FAKE_SD_SCRIPTS={self.control}" "HOME={self.srv / 'home'}"
ReadWritePaths=
ReadWritePaths={self.srv}
StandardOutput=append:{self.log}
StandardError=inherit
ExecStopPost=/bin/sh -c 'echo "$$SERVICE_RESULT $$EXIT_CODE $$EXIT_STATUS" >> {self.results}'
{made_visible(sorted(needed)) if "ProtectHome=" in shipped else ""}
"""
        (self.srv / "home").mkdir()
        manager.install(name, shipped, {**(dropins or {}), "test-machine.conf": dropin})

    def write_config(self, **overrides: Any) -> None:
        self.config.write_text(dump_toml(merge(self.settings, overrides)))

    def show(self, *properties: str) -> dict[str, str]:
        return self.manager.show(self.name, *(properties or STATE))

    def wait_for(self, predicate: Callable[[dict[str, str]], bool], what: str,
                 properties: tuple[str, ...] = STATE, timeout: float = 60,
                 seen: list[dict[str, str]] | None = None) -> dict[str, str]:
        return self.manager.wait_for(self.name, predicate, properties, what, timeout, seen)

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        self.wait_for(lambda _: text in self.output(), f"{text!r} in lorad's log",
                      timeout=timeout)

    def ended(self) -> list[str]:
        """How each run ended, "SERVICE_RESULT EXIT_CODE EXIT_STATUS" (ExecStopPost=)."""
        return self.results.read_text().splitlines() if self.results.exists() else []

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self) -> dict[str, str]:
        """systemctl start (it returns once the unit is active), then the unit's state."""
        self.manager.systemctl("start", self.name, timeout=120)
        return self.show()

    def close(self) -> None:
        self.manager.systemctl("stop", self.name, check=False, timeout=240)
        self.manager.systemctl("reset-failed", self.name, check=False)
        self.marker.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def manager() -> Iterator[UserManager]:
    reason = missing_prerequisite()
    if reason:
        pytest.skip(f"no real systemd user manager here: {reason}")
    # Not under /tmp: PrivateTmp= would hide it from the service (and ReadWritePaths= clash).
    remove_stale(Path("/var/lib"), "lorad-systemd-test-")  # left by a run killed with SIGKILL
    root = Path(tempfile.mkdtemp(prefix=f"lorad-systemd-test-{os.getpid()}-", dir="/var/lib"))
    user_manager = UserManager(root)
    try:
        try:
            user_manager.start()
        except ManagerUnavailable as why:
            pytest.skip(f"no real systemd user manager here: {why}")
        yield user_manager
    finally:
        user_manager.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def make_lorad(manager: UserManager, request: pytest.FixtureRequest
               ) -> Iterator[Callable[..., Lorad]]:
    """Lorad(...) on folders of this test's own, stopped at its end."""
    made: list[Lorad] = []

    def make(**options: Any) -> Lorad:
        made.append(Lorad(manager, manager.root / f"{request.node.name}-{len(made)}", **options))
        return made[-1]

    try:
        yield make
    finally:
        for service in made:
            service.close()


@pytest.fixture
def lorad(make_lorad: Callable[..., Lorad]) -> Lorad:
    return make_lorad()


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # reaped soon
    except (FileNotFoundError, ProcessLookupError):
        return True


def process_group(pgid: int) -> list[int]:
    """The live processes of a process group, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def trainer_runs(lorad: Lorad) -> list[dict[str, Any]]:
    runs = Path(f"{lorad.control}.runs.jsonl")
    return [json.loads(line) for line in runs.read_text().splitlines()] if runs.exists() else []


# ---- the tests ------------------------------------------------------------------------------
def test_lorad_is_active_only_after_ready_and_shows_its_status_line(lorad):
    seen: list[dict[str, str]] = []
    lorad.manager.systemctl("start", "--no-block", lorad.name)
    active = lorad.wait_for(lambda s: s["ActiveState"] in ("active", "failed"), "active",
                            seen=seen, properties=(*STATE, "ExecMainStartTimestampMonotonic",
                                                   "ActiveEnterTimestampMonotonic"))
    assert active["ActiveState"] == "active", (active, lorad.output(), lorad.manager.output())
    # Activating (python starting, lorad migrating and scanning) until READY=1; "inactive" only
    # if the start job had not run yet when first asked.
    states = [s["ActiveState"] for s in seen]
    while states[0] == "inactive":
        states.pop(0)
    assert states[-1] == "active" and states[:-1] and set(states[:-1]) == {"activating"}, seen
    assert int(active["ActiveEnterTimestampMonotonic"]) > int(
        active["ExecMainStartTimestampMonotonic"])
    assert "lorad is watching" in lorad.output()  # logged just before READY=1
    assert active["StatusText"] == "0 queued, 0 done today"


def test_the_watchdog_is_fed_while_idle_and_a_frozen_lorad_is_restarted(lorad):
    started = lorad.start()
    pid = int(started["MainPID"])
    timing = lorad.show("WatchdogUSec", "ActiveEnterTimestampMonotonic")
    assert timing["WatchdogUSec"] == f"{WATCHDOG_SECONDS}s"
    # Fed: pings still arrive two watchdog intervals after it became active, same process.
    enough = int(timing["ActiveEnterTimestampMonotonic"]) + 2 * WATCHDOG_SECONDS * 1_000_000
    fed = lorad.wait_for(lambda s: int(s["WatchdogTimestampMonotonic"]) > enough,
                         "pings past two watchdog intervals",
                         properties=(*STATE, "WatchdogTimestampMonotonic"), timeout=30)
    assert (fed["ActiveState"], fed["MainPID"], fed["NRestarts"]) == ("active", str(pid), "0")

    os.kill(pid, signal.SIGSTOP)  # frozen: no more pings
    try:
        restarted = lorad.wait_for(
            lambda s: s["NRestarts"] == "1" and s["ActiveState"] == "active",
            "a restart by the watchdog", timeout=60)
    finally:
        if not gone(pid):
            os.kill(pid, signal.SIGCONT)
    assert int(restarted["MainPID"]) not in (0, pid) and gone(pid)
    [ended] = lorad.ended()  # WatchdogSignal= (SIGABRT), then SIGCONT; a core dump or not
    assert ended in ("watchdog killed ABRT", "watchdog dumped ABRT"), ended


def test_reload_applies_a_good_configuration_and_a_broken_one_leaves_lorad_running(lorad):
    pid = lorad.start()["MainPID"]
    lorad.write_config(default_model="sdxl", models={"sdxl": {
        "path": lorad.settings["models"]["sd15"]["path"], "family": "sdxl"}})
    lorad.manager.systemctl("reload", lorad.name)
    lorad.wait_for_log("configuration reloaded")
    lorad.config.write_text(lorad.config.read_text() + "\nno_such_key = 1\n")
    lorad.manager.systemctl("reload", lorad.name)
    lorad.wait_for_log("configuration not reloaded")
    after = lorad.show()
    assert (after["ActiveState"], after["MainPID"], after["NRestarts"]) == ("active", pid, "0")
    refused = next(line for line in lorad.output().splitlines() if "not reloaded" in line)
    assert "no_such_key" in refused


def test_a_killed_lorad_is_restarted(lorad):
    pid = int(lorad.start()["MainPID"])
    os.kill(pid, signal.SIGKILL)
    restarted = lorad.wait_for(lambda s: s["NRestarts"] == "1" and s["ActiveState"] == "active",
                               "a restart after SIGKILL")
    assert int(restarted["MainPID"]) not in (0, pid)
    assert lorad.ended() == ["signal killed KILL"]


def test_stop_during_a_training_ends_the_trainers_process_group_and_succeeds(lorad):
    lorad.control.write_text(json.dumps({"epoch_seconds": 1.0}))
    lorad.start()
    drop(lorad.srv, "Carol", "epochs = 5\n")
    lorad.wait_for(lambda _: any(run["script"].endswith("train_network.py")
                                 for run in trainer_runs(lorad)), "the trainer to start")
    [run] = trainer_runs(lorad)
    trainer = run["pid"]
    group = os.getpgid(trainer)
    assert group != int(lorad.show()["MainPID"])  # the trainer has a process group of its own

    lorad.manager.systemctl("stop", lorad.name, timeout=240)
    stopped = lorad.show(*STATE, "ExecMainStatus")
    assert (stopped["ActiveState"], stopped["Result"], stopped["ExecMainStatus"]) == (
        "inactive", "success", "0"), (stopped, lorad.output())
    assert lorad.ended() == ["success exited 0"]
    assert gone(trainer) and process_group(group) == []
    assert "stopped during train; it continues there at the next start" in lorad.output()


def train_one_folder(lorad: Lorad, name: str) -> dict[str, Any]:
    """Drop a folder, wait for its job to end; the job."""
    lorad.start()
    drop(lorad.srv, name, "epochs = 1\n")
    lorad.wait_for(lambda _: all_final(1)(status(lorad.config)), "the job to finish",
                   timeout=120)
    [job] = status(lorad.config)
    assert job["state"] == "done", (job, lorad.output())
    assert list((lorad.srv / "outbox" / name.lower()).glob("*.safetensors"))
    return job


def test_a_training_finishes_inside_the_sandbox(lorad):
    lorad.marker.write_text("the host's /tmp")
    train_one_folder(lorad, "Dana")

    [probe] = [json.loads(path.read_text()) for path in lorad.probes.glob("*.json")]
    assert probe["NoNewPrivs"] == "1"
    assert probe["CapBnd"] == "0000000000000000"  # CapabilityBoundingSet= (empty)
    assert probe["Seccomp"] == "2"  # RestrictNamespaces=, SystemCallArchitectures=...
    assert probe["write_to_root"] == "EROFS"  # ProtectSystem=strict
    assert probe["host_tmp_marker_seen"] is False  # PrivateTmp=
    assert probe["open_dev_null"] == "ok"
    if "open_block_device" in probe:  # DevicePolicy=closed: refused by the device cgroup
        assert probe["open_block_device"] == "EPERM", probe


def test_the_opt_in_syscall_filter_lets_lorad_train_reload_and_stop(make_lorad):
    example = (UNITS / "lorad.service.d" / "syscall-filter.conf.example").read_text()
    lorad = make_lorad(dropins={"syscall-filter.conf": example})
    assert lorad.show("SystemCallFilter")["SystemCallFilter"]  # in force
    train_one_folder(lorad, "Erin")
    lorad.manager.systemctl("reload", lorad.name)
    lorad.wait_for_log("configuration reloaded")
    lorad.manager.systemctl("stop", lorad.name, timeout=240)
    assert lorad.ended() == ["success exited 0"], lorad.output()
    assert "Operation not permitted" not in lorad.output()


def test_the_user_unit_starts_reloads_and_stops_with_its_hardening(make_lorad):
    lorad = make_lorad(unit="lorad-user.service", name="lorad-user.service")
    started = lorad.start()
    assert (started["ActiveState"], started["StatusText"]) == ("active", "0 queued, 0 done today")
    main = Path(f"/proc/{started['MainPID']}/status").read_text()
    assert "\nNoNewPrivs:\t1\n" in main and "\nSeccomp:\t2\n" in main
    lorad.manager.systemctl("reload", lorad.name)
    lorad.wait_for_log("configuration reloaded")
    lorad.manager.systemctl("stop", lorad.name, timeout=240)
    assert lorad.ended() == ["success exited 0"], lorad.output()
