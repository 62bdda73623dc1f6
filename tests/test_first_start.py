"""A first start: `lorad run` with no configuration file runs on the user's own folders and says
so; where lorad looks for its configuration, and in which order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lorad.settings import ConfigError, load_settings, user_config_path
from tests.photos import make_photos

SYSTEM = Path("/etc/lorad/lorad.toml")
pytestmark = pytest.mark.skipif(SYSTEM.exists(), reason=f"{SYSTEM} exists on this machine")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home, the current folder outside it, and no LORAD_* or XDG_* variables."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.startswith(("LORAD_", "XDG_")):
            monkeypatch.delenv(name)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return home


def lorad(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lorad", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_run_without_a_configuration_uses_the_home_folders_says_so_and_works(home, tmp_path):
    env = {**os.environ, "LORAD_CAPTION__ENABLED": "false", "LORAD_WATCH__SETTLE_SECONDS": "0.5"}
    log = tmp_path / "daemon.log"
    with open(log, "wb") as handle:
        daemon = subprocess.Popen([sys.executable, "-m", "lorad", "run"], stdout=handle,
                                  stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        inbox = home / "lorad" / "inbox"
        deadline = time.monotonic() + 120
        while "lorad is watching" not in log.read_text():
            assert daemon.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        make_photos(tmp_path / "photos" / "Eve", 6)
        (tmp_path / "photos" / "Eve").rename(inbox / "Eve")
        while True:
            jobs = json.loads(lorad("status", "--json", env=env).stdout)
            if jobs and jobs[0]["progress_text"].startswith("waiting for training"):
                break
            assert daemon.poll() is None and time.monotonic() < deadline, (jobs, log.read_text())
            time.sleep(0.3)
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    first = log.read_text().splitlines()[:2]
    assert "no configuration file (looked for lorad.toml, " in first[0]
    assert f"{home}/.config/lorad/lorad.toml, /etc/lorad/lorad.toml" in first[0]
    assert "lorad init" in first[0]
    state = home / ".local" / "state" / "lorad"
    assert f"inbox {inbox}, outbox {home}/lorad/outbox, state_dir {state}" in first[1]
    assert (jobs[0]["state"], jobs[0]["stage"]) == ("queued", "train")
    assert "kohya.sd_scripts (/opt/sd-scripts) does not exist" in jobs[0]["progress_text"]
    assert (state / "lorad.db").is_file()
    assert (home / "lorad" / "outbox" / "eve" / "report.json").is_file()


def test_the_nearest_configuration_wins_and_the_user_one_comes_before_the_systems(home):
    user = user_config_path()
    assert user == home / ".config" / "lorad" / "lorad.toml"
    user.parent.mkdir(parents=True)
    user.write_text(f'inbox = "{home}/u/in"\noutbox = "{home}/u/out"\nstate_dir = "{home}/u/s"\n')
    assert load_settings().inbox == home / "u" / "in"
    Path("lorad.toml").write_text(f'inbox = "{home}/c/in"\noutbox = "{home}/c/out"\n'
                                  f'state_dir = "{home}/c/s"\n')
    assert load_settings().inbox == home / "c" / "in"


def test_a_file_that_exists_must_name_its_folders_and_a_missing_explicit_file_is_an_error(home):
    Path("lorad.toml").write_text('log_level = "DEBUG"\n')
    with pytest.raises(ConfigError, match="lorad.toml: 'inbox' is required"):
        load_settings()
    with pytest.raises(ConfigError, match="nowhere.toml: no such configuration file"):
        load_settings(home / "nowhere.toml")


def test_the_defaults_follow_xdg_state_home_and_lorad_variables(home, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("LORAD_INBOX", str(tmp_path / "elsewhere"))
    settings = load_settings()
    assert settings.state_dir == tmp_path / "xdg-state" / "lorad"
    assert settings.inbox == tmp_path / "elsewhere"
    assert settings.outbox == home / "lorad" / "outbox"
