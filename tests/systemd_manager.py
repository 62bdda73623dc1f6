"""A real `systemd --user` manager for tests, started by hand: no systemd runs as PID 1 here.

What it takes (/work/shared/reference/systemd.md has how each step was found):
- a mount namespace of its own (`unshare --mount --propagation private`) in which `/run` is a
  mount point (bound onto itself: systemd gives sandboxed units an empty /run otherwise) and
  `/run/systemd` a tmpfs holding an empty `system/`, so that the manager believes the machine
  was booted with systemd;
- the manager's runtime folder (XDG_RUNTIME_DIR: its private socket, the units' notify socket)
  on that tmpfs, outside /tmp and /home so that PrivateTmp=/ProtectHome= units still reach it,
  and `/run/systemd/inaccessible` linked to the manager's own (ProtectKernelLogs= and friends
  look for it there when the manager runs as root);
- cgroup folders of its own, the shell that becomes the manager moved into them before exec;
- `systemctl --user` run inside the namespace (`nsenter -t PID -m`); from outside it says
  "offline".

Everything is undone by stop(): the manager is asked to exit (exit.target stops its units), what
is left in its cgroups is killed, and the cgroups removed; the mount namespace goes with its last
process. If the test process dies first, the manager gets SIGTERM (PR_SET_PDEATHSIG), and the
next run removes the cgroups and folders that one left (remove_stale).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from lorad.system.groups import process_alive

RUNTIME_DIR = "/run/systemd/lorad-test-runtime"  # inside the manager's mount namespace
MANAGER_BINARIES = ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")
PR_SET_PDEATHSIG = 1
CGROUP_PREFIX = "lorad-test-"  # then the test process's pid


class ManagerUnavailable(Exception):
    """A real user manager cannot run on this machine; the message says why."""


def missing_prerequisite() -> str | None:
    """Why no user manager can be started here (for pytest.skip), or None."""
    if os.geteuid() != 0:
        return ("a real systemd user manager is started by hand in a mount namespace of its own, "
                "which needs root: run the tests as root to include it")
    if manager_binary() is None:
        return (f"no systemd binary ({' or '.join(MANAGER_BINARIES)}); Debian/Ubuntu: "
                "apt-get install systemd")
    for tool in ("systemctl", "unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian/Ubuntu: apt-get install systemd util-linux)"
    if not [folder for folder in cgroup_hierarchies() if "devices" not in folder.parts]:
        return ("no cgroup hierarchy for systemd (neither cgroup2 nor the name=systemd v1 "
                "hierarchy is mounted, per /proc/self/mounts)")
    return None


def manager_binary() -> str | None:
    return next((path for path in MANAGER_BINARIES if os.access(path, os.X_OK)), None)


def cgroup_hierarchies() -> list[Path]:
    """The folders, one per cgroup hierarchy, under which the manager gets a cgroup of its own:
    this process's own in cgroup2 and in the name=systemd v1 hierarchy (both, on a hybrid
    machine), from /proc/self/mounts and /proc/self/cgroup; and on a v1 or hybrid machine the
    same path in the v1 devices hierarchy, where DevicePolicy= is enforced (a manager uses a v1
    controller when the folder of its own cgroup path exists there)."""
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        own[controllers] = path.lstrip("/")  # "" for cgroup2, "name=systemd" for v1
    found = []
    devices = None
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] not in ("cgroup", "cgroup2"):
            continue
        options = fields[3].split(",")
        key = "" if fields[2] == "cgroup2" else (
            "name=systemd" if "name=systemd" in options else None)
        if key is not None and key in own:
            found.append(Path(fields[1]) / own[key])
        elif "devices" in options:
            devices = Path(fields[1])
    if devices is not None and "name=systemd" in own:
        folder = devices / own["name=systemd"]
        if folder.is_dir():
            found.append(folder)
    return found


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies (the manager then stops its
    units and exits)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


NAMESPACE_SCRIPT = r"""
set -e
mount --bind /run /run
mkdir -p /run/systemd
mount -t tmpfs -o mode=0755 lorad-test /run/systemd
mkdir /run/systemd/system
mkdir -m 0700 "$XDG_RUNTIME_DIR"
ln -s "$XDG_RUNTIME_DIR/systemd/inaccessible" /run/systemd/inaccessible
for procs in "$@"; do echo $$ > "$procs"; done
exec "$MANAGER" --user
"""


def remove_stale(parent: Path, prefix: str) -> None:
    """Remove what a test run killed with SIGKILL left in `parent`: the folders named
    <prefix><pid>-... of a process that is gone (cgroups, emptied first, or test folders)."""
    for folder in parent.glob(f"{prefix}*-*"):
        pid = folder.name.removeprefix(prefix).split("-", 1)[0]
        if not pid.isdigit() or process_alive(int(pid)):
            continue
        if (folder / "cgroup.procs").exists():
            UserManager.empty_cgroup(folder)
            for sub, _, _ in os.walk(folder, topdown=False):
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(sub)
        else:
            shutil.rmtree(folder, ignore_errors=True)


class UserManager:
    """One `systemd --user` manager; its units live in <root>/config/systemd/user."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.units = root / "config" / "systemd" / "user"
        self.log = root / "manager.log"
        self.cgroups: list[Path] = []
        self.proc: subprocess.Popen | None = None

    # ---- start and stop ---------------------------------------------------------------------
    def start(self, timeout: float = 60) -> UserManager:
        """Start the manager and wait until it answers; ManagerUnavailable when the machine
        refuses what it needs (cgroups, namespaces, mounts)."""
        reason = missing_prerequisite()
        if reason:
            raise ManagerUnavailable(reason)
        self.units.mkdir(parents=True, exist_ok=True)
        (self.root / "home").mkdir(exist_ok=True)
        name = f"{CGROUP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        for hierarchy in cgroup_hierarchies():
            remove_stale(hierarchy, CGROUP_PREFIX)
            folder = hierarchy / name
            try:
                folder.mkdir()
            except OSError as error:
                self.stop()
                raise ManagerUnavailable(f"cannot make a cgroup for the manager ({folder}: "
                                         f"{error})") from error
            self.cgroups.append(folder)
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(self.root / "home"),
            "XDG_CONFIG_HOME": str(self.root / "config"),
            "XDG_DATA_HOME": str(self.root / "data"),
            "XDG_STATE_HOME": str(self.root / "state"),
            "XDG_CACHE_HOME": str(self.root / "cache"),
            "XDG_RUNTIME_DIR": RUNTIME_DIR,
            "MANAGER": str(manager_binary()),
            "LANG": "C.UTF-8",
        }
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                 NAMESPACE_SCRIPT, "lorad-test-manager",
                 *(str(folder / "cgroup.procs") for folder in self.cgroups)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                output = self.output()
                self.stop()
                if "Operation not permitted" in output or "Permission denied" in output:
                    raise ManagerUnavailable("the machine refused the manager's mount namespace "
                                             f"or mounts:\n{output[-2000:]}")
                raise AssertionError(f"systemd --user exited ({self.proc.returncode}):\n"
                                     + output[-4000:])
            state = self.systemctl("is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"systemd --user did not come up in {timeout:.0f} s (state "
                                     f"{state!r}):\n{self.output()[-4000:]}")
            time.sleep(0.1)

    def stop(self, timeout: float = 60) -> None:
        """Ask the manager to exit (it stops its units), kill whatever is left in its cgroups,
        and remove them. Safe to call more than once, and after a failed start."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a user manager starts exit.target
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for top in self.cgroups:
            self.empty_cgroup(top)
        for top in self.cgroups:
            for folder, _, _ in os.walk(top, topdown=False):  # the deepest first
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(folder)
        self.cgroups = []

    @staticmethod
    def empty_cgroup(top: Path, timeout: float = 30) -> None:
        """SIGKILL every process in the cgroup tree `top` until none is left."""
        deadline = time.monotonic() + timeout
        while True:
            pids = {int(pid) for folder, _, _ in os.walk(top)
                    for pid in _read(Path(folder) / "cgroup.procs").split()}
            if not pids:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"processes {sorted(pids)} are still in {top}")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def output(self) -> str:
        """What the namespace's set-up printed (mount or unshare errors). The manager itself
        logs to /dev/console here (there is no journald), which the tests do not read."""
        return _read(self.log)

    # ---- talking to it ------------------------------------------------------------------------
    def systemctl(self, *args: str, check: bool = True, timeout: float = 60
                  ) -> subprocess.CompletedProcess:
        """`systemctl --user ARGS` in the manager's mount namespace."""
        assert self.proc is not None
        done = subprocess.run(
            ["nsenter", "-t", str(self.proc.pid), "-m", "--", "systemctl", "--user",
             "--no-pager", *args], capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "XDG_RUNTIME_DIR": RUNTIME_DIR})
        if check and done.returncode != 0:
            raise AssertionError(f"systemctl --user {' '.join(args)} failed "
                                 f"({done.returncode}): {done.stdout}{done.stderr}")
        return done

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """`systemctl show` of these properties, as a dict."""
        out = self.systemctl("show", unit, "--property=" + ",".join(properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for(self, unit: str, predicate: Callable[[dict[str, str]], bool],
                 properties: tuple[str, ...], what: str, timeout: float = 60,
                 seen: list[dict[str, str]] | None = None) -> dict[str, str]:
        """Poll the unit's properties until predicate(them) holds; every distinct answer is
        appended to `seen`."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.show(unit, *properties)
            if seen is not None and (not seen or seen[-1] != shown):
                seen.append(shown)
            if predicate(shown):
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {unit}: {what}; last {shown}\n"
                                     f"manager:\n{self.output()[-3000:]}")
            time.sleep(0.05)

    def install(self, name: str, unit: str, dropins: dict[str, str]) -> None:
        """Write the unit and its drop-ins (<name>.d/<file>) and reload the manager."""
        (self.units / name).write_text(unit)
        folder = self.units / f"{name}.d"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for file, text in dropins.items():
            (folder / file).write_text(text)
        self.systemctl("daemon-reload")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
