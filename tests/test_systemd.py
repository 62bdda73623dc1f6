"""lorad as a systemd service: the notify protocol, journald's log format, and the unit files.

There is no systemd here: the tests bind the notify socket themselves and read what lorad sends.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest

from lorad.system.logs import JournalFormatter, under_journald
from lorad.system.sdnotify import SystemdNotifier
from tests.daemon_process import DaemonProcess, all_final
from tests.notify_socket import NotifySocket
from tests.photos import make_photos

ROOT = Path(__file__).parent.parent
UNITS = ROOT / "systemd"
JOURNAL_LINE = re.compile(r"<[0-7]>")


def start(daemon: DaemonProcess, *args: str) -> DaemonProcess:
    """`lorad run ARGS` (DaemonProcess.start with extra arguments)."""
    with open(daemon.log, "ab") as handle:
        daemon.proc = subprocess.Popen(
            [sys.executable, "-m", "lorad", "--config", str(daemon.config), "run", *args],
            stdout=handle, stderr=subprocess.STDOUT, env=daemon.env, start_new_session=True)
    return daemon


def recording_python(path: Path) -> Path:
    """A python for caption.python that first writes its environment to <path>.env."""
    path.write_text(f'#!/bin/sh\nenv > "{path}.env"\nexec "{sys.executable}" "$@"\n')
    path.chmod(0o755)
    return path


# ---- the notify protocol, end to end ----------------------------------------------------
def test_systemd_hears_ready_then_watchdog_pings_then_stopping(tmp_path, config, fake_trainer):
    notify = NotifySocket(tmp_path / "notify.sock")
    caption_python = recording_python(tmp_path / "caption-python")
    cfg = config(caption={"python": str(caption_python)})
    fake_trainer(epoch_seconds=1.0)  # slow enough for a STATUS= between epochs
    log = tmp_path / "daemon.log"
    log.touch()
    journal = f"{log.stat().st_dev}:{log.stat().st_ino}"  # stderr "is" the journal stream
    env = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "2000000", "JOURNAL_STREAM": journal}
    daemon = DaemonProcess(cfg, log, env).start()
    try:
        ready = notify.wait_for(lambda m: m.get("READY") == "1", what="READY=1")
        make_photos(tmp_path / "photos" / "Bob", 4)
        (tmp_path / "photos" / "Bob" / "lora.toml").write_text("epochs = 3\n")
        shutil.copytree(tmp_path / "photos" / "Bob", tmp_path / "inbox" / "Bob")
        daemon.wait_for(all_final(1), what="the job to finish")
        notify.wait_for(lambda m: "1 done today" in m.get("STATUS", ""), what="STATUS done")
    finally:
        assert daemon.stop() == 0
        notify.close()

    assert ready["STATUS"] == "0 queued, 0 done today"
    first_ready, stopping = notify.index("READY", "1"), notify.index("STOPPING", "1")
    pings = [i for i, m in enumerate(notify.messages) if m.get("WATCHDOG") == "1"]
    assert 0 <= first_ready < pings[0] and len(pings) >= 3 and pings[-1] < stopping, notify.messages
    assert notify.messages[stopping]["STATUS"].startswith("stopping")
    assert "READY" not in str(notify.messages[first_ready + 1:])  # READY=1 once
    statuses = [m["STATUS"] for m in notify.messages if "STATUS" in m]
    progress = [int(found) for status in statuses
                for found in re.findall(r"training bob (\d+)%", status)]
    assert any(0 < percent < 100 for percent in progress), statuses  # training's progress shown

    runs = [json.loads(line) for line in Path(f"{fake_trainer()}.runs.jsonl").read_text()
            .splitlines()]
    assert runs and all(run["env"]["NOTIFY_SOCKET"] is None for run in runs)
    caption_env = Path(f"{caption_python}.env").read_text().splitlines()
    assert caption_env, "the captioner did not run"
    assert not [line for line in caption_env if line.startswith(("NOTIFY_SOCKET=", "WATCHDOG_"))]

    lines = daemon.output().splitlines()
    assert [line for line in lines if not JOURNAL_LINE.match(line)] == []
    assert "<6>lorad is watching" in daemon.output()
    assert "<6>job 1 (bob): done: " in daemon.output()


def test_an_abstract_notify_socket_hears_ready_and_stopping(tmp_path, config):
    notify = NotifySocket(abstract_name=f"lorad-test-{uuid.uuid4().hex}")
    daemon = DaemonProcess(config(), tmp_path / "daemon.log", {"NOTIFY_SOCKET": notify.address})
    start(daemon, "--log-level", "WARNING")
    try:
        notify.wait_for(lambda m: m.get("READY") == "1", what="READY=1")
    finally:
        assert daemon.stop() == 0
        notify.close()
    assert 0 <= notify.index("READY", "1") < notify.index("STOPPING", "1")
    assert notify.index("WATCHDOG") == -1  # no WATCHDOG_USEC, no pings
    assert "lorad is watching" not in daemon.output()  # --log-level WARNING hides INFO


def test_watchdog_pings_come_at_half_the_interval(tmp_path):
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        notifier = SystemdNotifier(notify.address, watchdog_usec=2_000_000)
        for now in (100.0, 100.5, 101.0, 101.2, 102.1):
            notifier.watchdog(now)
        notify.wait_for(lambda m: len(notify.messages) >= 3, what="three pings")
    finally:
        notify.close()
    assert notify.messages == [{"WATCHDOG": "1"}] * 3


def test_notify_variables_are_taken_out_of_the_environment(monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = SystemdNotifier.from_env()
    assert (notifier.address, notifier.watchdog_interval) == ("/run/systemd/notify", 15.0)
    assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} & set(os.environ)


def test_a_watchdog_meant_for_another_process_is_ignored(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert SystemdNotifier.from_env().watchdog_interval is None


def test_an_unreachable_notify_socket_is_reported_once_not_at_every_ping(tmp_path, caplog):
    missing = tmp_path / "gone" / "notify.sock"
    notifier = SystemdNotifier(str(missing), watchdog_usec=2_000_000)
    with caplog.at_level(logging.WARNING):
        notifier.ready("0 queued, 0 done today")
        for second in range(60):
            notifier.watchdog(float(second))
            notifier.status(f"{second} queued, 0 done today")
        notifier.stopping("stopping")
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert f"NOTIFY_SOCKET={missing}" in warning.getMessage()
    assert "No such file or directory" in warning.getMessage()


# ---- journald's line format ---------------------------------------------------------------
def test_journal_lines_carry_the_priority_on_every_line():
    formatter = JournalFormatter("%(message)s")

    def line(level: int, message: str) -> str:
        return formatter.format(logging.LogRecord("lorad", level, __file__, 1, message, (), None))

    assert line(logging.ERROR, "job 3 (anna): failed: out of memory") == (
        "<3>job 3 (anna): failed: out of memory")
    assert line(logging.WARNING, "w") == "<4>w" and line(logging.DEBUG, "d") == "<7>d"
    assert line(logging.INFO, "first\nsecond") == "<6>first\n<6>second"


def test_journald_is_recognised_by_the_stream_it_gave_us(tmp_path, monkeypatch):
    stream = open(tmp_path / "stderr", "w")
    try:
        monkeypatch.setattr(sys, "stderr", stream)
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert under_journald()
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not under_journald()  # inherited by something whose stderr goes elsewhere
    finally:
        stream.close()


# ---- the unit files -----------------------------------------------------------------------
def unit_settings(path: Path) -> dict[str, list[str]]:
    """Key -> every value given (DeviceAllow= repeats), comments left out."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def seconds(value: str) -> float:
    units = {"s": 1, "min": 60}
    number, unit = re.fullmatch(r"(\d+)\s*(s|min)?", value).groups()  # type: ignore[union-attr]
    return int(number) * units[unit or "s"]


def writable_entry(unit: dict[str, list[str]], path: str) -> str | None:
    """The ReadWritePaths= entry that makes path writable (each entry is a mount of its own)."""
    entries = [entry for value in unit.get("ReadWritePaths", []) for entry in value.split()]
    return next((entry for entry in entries if Path(path).is_relative_to(entry)), None)


def test_the_system_unit_matches_the_example_configuration():
    unit = unit_settings(UNITS / "lorad.service")
    example = tomllib.loads((ROOT / "examples" / "lorad.toml").read_text())
    inbox_entry = writable_entry(unit, example["inbox"])
    assert inbox_entry is not None
    # One mount for inbox, state and outbox: claims are renames and deliveries hard links.
    for key in ("state_dir", "outbox"):
        assert writable_entry(unit, example[key]) == inbox_entry, key
    assert {example["inbox"], example["state_dir"]} <= set(unit["RequiresMountsFor"][0].split())
    # StateDirectory= is lorad's home (caches), a mount of its own: never state_dir.
    home = "/var/lib/" + unit["StateDirectory"][0]
    assert unit["StateDirectory"] == ["lorad"] and f"HOME={home}" in unit["Environment"]
    assert not Path(example["state_dir"]).is_relative_to(home)
    assert unit["ExecStart"][0].endswith("lorad --config /etc/lorad/lorad.toml run")
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_the_nvidia_nodes_unit_runs_before_lorad_as_root():
    unit = unit_settings(UNITS / "lorad-nvidia-nodes.service")
    assert unit["ExecStart"] == ["/usr/bin/nvidia-modprobe -u -c=0"]
    assert unit["Before"] == ["lorad.service"] and "User" not in unit
    assert (unit["Type"], unit["RemainAfterExit"]) == (["oneshot"], ["yes"])


@pytest.mark.parametrize("name", ["lorad.service", "lorad-user.service"])
def test_the_units_are_notify_services_that_stop_gently(name):
    unit = unit_settings(UNITS / name)
    for key, value in (("Type", "notify"), ("NotifyAccess", "main"), ("KillMode", "mixed"),
                       ("Restart", "on-failure"), ("NoNewPrivileges", "yes")):
        assert unit.get(key) == [value], key
    assert seconds(unit["WatchdogSec"][0]) >= 60
    grace = 90  # kohya.stop_grace_seconds' default: up to 0.8 x grace for the epoch, then grace
    assert seconds(unit["TimeoutStopSec"][0]) >= 1.8 * grace
    assert "MemoryDenyWriteExecute" not in unit  # it breaks PyTorch


def test_the_system_unit_is_sandboxed_but_sees_the_gpu():
    unit = unit_settings(UNITS / "lorad.service")
    for key, value in (("User", "lorad"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("DevicePolicy", "closed")):
        assert unit.get(key) == [value], key
    allowed = {entry.split()[0] for entry in unit["DeviceAllow"]}
    assert allowed == {"char-nvidia", "char-nvidiactl", "char-nvidia-frontend", "char-nvidia-uvm",
                       "char-nvidia-caps"}
    assert "PrivateDevices" not in unit  # it would hide the GPU


def test_the_ray_worker_unit_joins_the_head_and_takes_its_trainers_down_with_it():
    unit = unit_settings(UNITS / "lorad-ray-worker.service")
    assert unit["ExecStart"][0].endswith("ray start --block --address=${LORAD_RAY_HEAD}")
    assert unit["ExecStop"][0].endswith("ray stop")
    assert any(e.startswith("LORAD_RAY_HEAD=") for e in unit["Environment"])
    for key, value in (("User", "lorad"), ("KillMode", "control-group"),
                       ("Restart", "on-failure"), ("NoNewPrivileges", "yes")):
        assert unit.get(key) == [value], key


@pytest.mark.parametrize("name", ["lorad.service", "lorad-user.service",
                                  "lorad-nvidia-nodes.service", "lorad-web.service",
                                  "lorad-ray-worker.service"])
def test_the_units_pass_systemd_analyze_verify(name, tmp_path):
    """The syntax check. verify fails when ExecStart's program does not exist, so the copy that
    is checked runs an executable that does (this python) with the same arguments; it does not
    look User=lorad up."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian/Ubuntu: apt-get install systemd), "
                    "so the unit files' syntax is not checked")
    text = (UNITS / name).read_text()
    text = re.sub(r"^(ExecStart|ExecStop)=\S+", rf"\1={sys.executable}", text,
                  flags=re.MULTILINE)
    unit = tmp_path / name
    unit.write_text(text)
    runtime = tmp_path / "runtime"  # --user needs a runtime folder of its own
    runtime.mkdir()
    scope = ["--user"] if "user" in name else []
    done = subprocess.run([analyze, *scope, "verify", str(unit)], capture_output=True, text=True,
                          env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)}, timeout=60)
    print(done.stdout + done.stderr)
    # verify exits 0 even for unknown keys and unparsable values; those lines name the file.
    about_unit = [line for line in (done.stdout + done.stderr).splitlines() if name in line]
    assert done.returncode == 0 and about_unit == [], done.stdout + done.stderr
