"""What a process sees of its sandbox, written as JSON: run by a stand-in Kohya python inside
lorad.service (tests/test_systemd_real.py), so it sees exactly what a trainer sees.

    python sandbox_probe.py OUT.json HOST_TMP_MARKER [BLOCK_DEVICE]
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path


def attempt(action: Callable[[], object]) -> str:
    """"ok", or the errno name of the OSError the action raised (EPERM, EROFS...)."""
    try:
        action()
    except OSError as error:
        return errno.errorcode.get(error.errno or 0, str(error))
    return "ok"


def status_field(name: str) -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    return ""


def probe(marker: str, device: str) -> dict[str, str | bool]:
    found: dict[str, str | bool] = {
        "NoNewPrivs": status_field("NoNewPrivs"),
        "CapBnd": status_field("CapBnd"),
        "Seccomp": status_field("Seccomp"),
        "write_to_root": attempt(lambda: open("/lorad-sandbox-probe", "w").close()),
        "host_tmp_marker_seen": os.path.exists(marker),
        "open_dev_null": attempt(lambda: open("/dev/null", "r+b").close()),
    }
    if device:
        found["open_block_device"] = attempt(lambda: open(device, "rb").close())
    return found


if __name__ == "__main__":
    out, marker, *device = sys.argv[1:]
    Path(out).write_text(json.dumps(probe(marker, device[0] if device else "")))
