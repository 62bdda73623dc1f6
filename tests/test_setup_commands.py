"""`lorad init` writes a configuration that loads, with what this machine has; `lorad kohya
install` makes a Kohya that lorad can use, step by step, again after a failure."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lorad.cli import main
from lorad.settings import load_settings
from tests.test_examples import LORAD_TOML

TEMPLATE = Path(__file__).parent.parent / "lorad" / "setup" / "lorad.toml"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.startswith(("LORAD_", "XDG_", "HF_HOME")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return home


def safetensors(path: Path, tensor: str) -> None:
    header = json.dumps({tensor: {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}}).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0")


def test_the_packaged_template_is_the_example_configuration():
    assert TEMPLATE.read_text() == LORAD_TOML.read_text()


def test_init_finds_kohya_and_the_models_and_writes_a_configuration_that_loads(home):
    sd_scripts = home / "sd-scripts"
    (sd_scripts / "venv" / "bin").mkdir(parents=True)
    (sd_scripts / "train_network.py").write_text("")
    (sd_scripts / "venv" / "bin" / "python").symlink_to(sys.executable)
    webui = home / "stable-diffusion-webui" / "models" / "Stable-diffusion"
    safetensors(webui / "base.safetensors", "conditioner.embedders.1.model.x")
    safetensors(webui / "dreamshaper_8.safetensors", "cond_stage_model.transformer.x")
    (webui / "juggernautXL.ckpt").write_bytes(b"not read")

    result = CliRunner().invoke(main, ["init"])
    assert result.exit_code == 0, result.output
    path = home / ".config" / "lorad" / "lorad.toml"
    assert f"wrote {path}" in result.output
    assert result.output.rstrip().endswith("next: lorad doctor, then lorad run")
    settings = load_settings(path)
    assert settings.inbox == home / "lorad" / "inbox" and settings.inbox.is_dir()
    assert settings.outbox.is_dir() and settings.state_dir == home / ".local/state/lorad"
    assert settings.kohya.sd_scripts == sd_scripts
    assert settings.kohya.python_path() == str(sd_scripts / "venv" / "bin" / "python")
    assert {name: (m.path, m.family) for name, m in settings.models.items()} == {
        "sdxl": (str(webui / "base.safetensors"), "sdxl"),
        "sd15": (str(webui / "dreamshaper_8.safetensors"), "sd15"),
        "juggernautxl": (str(webui / "juggernautXL.ckpt"), "sdxl")}
    assert settings.default_model == "sdxl"
    assert "# a kohya_ss GUI LoRA preset for every job" in path.read_text()  # comments stay

    again = CliRunner().invoke(main, ["init"])
    assert again.exit_code == 1 and "exists already" in again.output
    assert CliRunner().invoke(main, ["init", "--force"]).exit_code == 0


def test_init_on_a_bare_machine_writes_a_file_that_loads_and_says_what_is_missing(home):
    result = CliRunner().invoke(main, ["init", str(home / "conf")])
    assert result.exit_code == 0, result.output
    assert "no Kohya checkout found: lorad kohya install" in result.output
    assert "no base model found" in result.output
    assert f"next: lorad -c {home / 'conf' / 'lorad.toml'} doctor" in result.output
    settings = load_settings(home / "conf" / "lorad.toml")
    assert settings.models == {} and settings.kohya.sd_scripts == Path("/opt/sd-scripts")


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})


def local_sd_scripts(tmp_path: Path, requirements: str = "") -> tuple[Path, str]:
    """A git repository shaped like sd-scripts: train_network.py answers --help."""
    repo = tmp_path / "sd-scripts-origin"
    repo.mkdir()
    (repo / "train_network.py").write_text("import sys\nprint('usage: train_network.py')\n"
                                           "sys.exit(0 if '--help' in sys.argv else 2)\n")
    (repo / "requirements.txt").write_text(requirements)
    git("init", "--quiet", cwd=repo)
    git("add", ".", cwd=repo)
    git("commit", "--quiet", "-m", "sd-scripts", cwd=repo)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True, check=True).stdout.strip()
    return repo, head


def test_kohya_install_makes_a_kohya_lorad_can_use_and_a_rerun_goes_on(home, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # nothing to download: pip must not need the network
    repo, head = local_sd_scripts(tmp_path, "surely-not-installed-package\n")
    CliRunner().invoke(main, ["init"])
    config = home / ".config" / "lorad" / "lorad.toml"
    target = home / "sd-scripts"
    args = ["kohya", "install", str(target), "--repo", str(repo), "--ref", head[:8],
            "--torch", "", "--write-config", str(config)]

    failed = CliRunner().invoke(main, args)
    assert failed.exit_code == 1
    assert "step requirements failed" in failed.output
    assert f"retry it with: cd {target} && {target}/venv/bin/python -m pip install" in (
        failed.output)

    (target / "requirements.txt").write_text("")  # fixed by hand, then run again
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"[1/7] clone: {target} is a clone already"
    assert lines[2] == f"[3/7] venv: {target / 'venv'} exists"
    assert "[4/7] torch: skipped" in lines[3]
    assert lines[6] == "[7/7] check: train_network.py --help answers"
    assert (home / ".cache/huggingface/accelerate/default_config.yaml").is_file()
    settings = load_settings(config)
    assert settings.kohya.sd_scripts == target
    assert settings.kohya.python_path() == str(target / "venv" / "bin" / "python")


def test_kohya_install_prints_the_kohya_lines_and_refuses_a_missing_config(home, tmp_path,
                                                                          monkeypatch):
    from lorad.training.kohya.install import torch_args

    assert torch_args("torch==2.6.0 torchvision==0.21.0", True) == [
        "torch==2.6.0", "torchvision==0.21.0", "--index-url",
        "https://download.pytorch.org/whl/cu128"]
    assert torch_args("torch", False)[-1].endswith("/whl/cpu")
    result = CliRunner().invoke(main, ["kohya", "install", str(home / "k"), "--write-config",
                                       str(home / "none.toml")])
    assert result.exit_code == 1 and "write it first with lorad init" in result.output
