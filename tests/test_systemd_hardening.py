"""How exposed lorad's units are, by `systemd-analyze security --offline=yes` (no root, no running
systemd needed), and the directives left out on purpose. The real proof that the hardened units
still run lorad is tests/test_systemd_real.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_systemd import unit_settings

UNITS = Path(__file__).parent.parent / "systemd"
FILTER_EXAMPLE = UNITS / "lorad.service.d" / "syscall-filter.conf.example"
MOST_EXPOSURE = 3.5
# Each breaks lorad (README: "Sandboxing"); the unit says why in a "# Not KEY" comment.
LEFT_OUT = ("PrivateNetwork", "IPAddressDeny", "ProcSubset", "PrivateDevices",
            "MemoryDenyWriteExecute", "UMask", "PrivateUsers", "SystemCallFilter")


def exposure(unit: Path) -> float:
    """The overall exposure level systemd-analyze gives the unit file (0 best, 10 worst)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian/Ubuntu: apt-get install systemd), "
                    "so the units' exposure is not measured")
    done = subprocess.run([analyze, "security", "--offline=yes", str(unit)], capture_output=True,
                          text=True, timeout=60)
    if "--offline" in done.stderr and done.returncode != 0:
        pytest.skip(f"this systemd-analyze has no --offline (systemd 250 or newer has it): "
                    f"{done.stderr.strip()}")
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found, done.stdout + done.stderr
    return float(found.group(1))


def test_the_system_unit_is_exposed_at_most_3_5_by_systemd_analyze():
    assert exposure(UNITS / "lorad.service") <= MOST_EXPOSURE


def test_the_opt_in_syscall_filter_lowers_the_exposure_further(tmp_path):
    combined = tmp_path / "lorad.service"  # the unit with the drop-in, as systemd reads them
    combined.write_text((UNITS / "lorad.service").read_text() + "\n" + FILTER_EXAMPLE.read_text())
    assert exposure(combined) < exposure(UNITS / "lorad.service")
    assert unit_settings(FILTER_EXAMPLE)["SystemCallFilter"] == ["@system-service"]


def test_directives_that_break_lorad_are_left_out_with_a_reason():
    text = (UNITS / "lorad.service").read_text()
    unit = unit_settings(UNITS / "lorad.service")
    for key in LEFT_OUT:
        assert key not in unit, key
        assert re.search(rf"^# Not .*\b{key}=", text, re.MULTILINE), f"no '# Not {key}='"


def test_the_user_unit_has_no_state_directory_whose_place_depends_on_the_systemd_version():
    # StateDirectory= of a user unit is ~/.local/state from systemd 254 on, ~/.config before.
    assert "StateDirectory" not in unit_settings(UNITS / "lorad-user.service")
