"""`lorad doctor`: one line per finding, OK / WARN / FAIL, and exit status 1 when anything fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lorad import doctor
from lorad.gpus import gpus as visible_gpus
from lorad.settings import ModelSettings, load_settings

TENSOR_NAMES = {"sd15": "cond_stage_model.transformer.text_model.final_layer_norm.weight",
                "sdxl": "conditioner.embedders.1.model.ln_final.weight"}


def write_checkpoint(path: Path, family: str) -> Path:
    """A tiny but valid safetensors file whose tensor name says which family it is."""
    entry = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    header = json.dumps({TENSOR_NAMES[family]: entry}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    return path


def good_models(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "models" / "base-sd15.safetensors", "sd15")
    write_checkpoint(tmp_path / "models" / "base-sdxl.safetensors", "sdxl")


def run_doctor(config: Path, tmp_path: Path, *args: str) -> tuple[int, list[tuple[str, str, str]]]:
    """`lorad doctor` as a person runs it, without nvidia-smi on PATH; (status, lines)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    env = {**os.environ, "PATH": str(bin_dir), "HF_HUB_CACHE": str(tmp_path / "hub")}
    done = subprocess.run([sys.executable, "-m", "lorad", "--config", str(config), "doctor",
                           *args], capture_output=True, text=True, env=env, timeout=120)
    lines = []
    for line in done.stdout.splitlines():
        status, rest = line.split(None, 1)
        name, message = rest.split(": ", 1)
        lines.append((status, name, message))
    assert lines, done.stderr
    return done.returncode, lines


def by_name(lines: list[tuple[str, str, str]]) -> dict[str, tuple[str, str]]:
    return {name: (status, message) for status, name, message in lines}


def test_a_good_configuration_passes_with_a_warning_that_no_gpu_is_visible(tmp_path, config,
                                                                          hook):
    good_models(tmp_path)
    for name in ("inbox", "outbox", "state"):
        (tmp_path / name).mkdir()
    cfg = config(kohya={"accelerate": True}, notify={"urls": [hook.url]})
    status, lines = run_doctor(cfg, tmp_path, "--send-test")
    found = by_name(lines)
    assert status == 0, lines
    assert [s for s, _, _ in lines if s == "FAIL"] == []
    assert found["GPU"][0] == "WARN" and "no NVIDIA GPU" in found["GPU"][1]
    for name in ("configuration", "inbox", "outbox", "state_dir", "failed", "folder layout",
                 "watching", "inotify", "Kohya", "accelerate", "models.sd15", "models.sdxl",
                 "BLIP", "notifications", "test notification"):
        assert name in found, f"no {name} line in {lines}"
    assert found["Kohya"][0] == "OK" and "sdxl_train_network.py --help" in found["Kohya"][1]
    assert found["accelerate"][0] == "OK"
    assert found["models.sd15"][0] == "OK"
    assert "an SD1.5 model as configured" in found["models.sd15"][1]
    assert "an SDXL model as configured" in found["models.sdxl"][1]
    assert found["test notification"][0] == "OK"
    assert [m["title"] for m in hook.wait_for(1)] == ["lorad: test notification"]


def test_missing_kohya_a_missing_model_and_a_bad_url_each_fail_and_exit_1(tmp_path, config):
    good_models(tmp_path)
    cfg = config(kohya={"sd_scripts": str(tmp_path / "no-sd-scripts")},
                 models={"sd15": {"path": str(tmp_path / "models" / "gone.safetensors")}},
                 notify={"urls": ["nosuchservice://somewhere"]})
    status, lines = run_doctor(cfg, tmp_path)
    failed = {name: message for s, name, message in lines if s == "FAIL"}
    assert status == 1
    assert sorted(failed) == ["Kohya", "models.sd15", "notifications"], lines
    assert "no-sd-scripts) does not exist" in failed["Kohya"]
    assert "gone.safetensors does not exist" in failed["models.sd15"]
    assert "not a URL Apprise understands" in failed["notifications"]
    assert by_name(lines)["models.sdxl"][0] == "OK"  # the other checks still ran


def test_an_invalid_configuration_is_one_failure_and_nothing_else_is_checked(tmp_path, config):
    cfg = config(outbox=str(tmp_path / "inbox" / "results"))
    status, lines = run_doctor(cfg, tmp_path)
    assert status == 1
    assert len(lines) == 1, lines
    level, name, message = lines[0]
    assert (level, name) == ("FAIL", "configuration")
    assert "is inside the inbox" in message


def test_a_checkpoint_of_the_other_family_fails(tmp_path):
    sdxl_file = write_checkpoint(tmp_path / "sdxl.safetensors", "sdxl")
    check = doctor.base_model("models.sd15", ModelSettings(path=str(sdxl_file), family="sd15"))
    assert check.status == "FAIL"
    assert 'is an SDXL model but family = "sd15"; set family = "sdxl"' in check.message


def test_a_file_that_is_not_safetensors_fails_and_a_hub_name_warns(tmp_path):
    junk = tmp_path / "model.safetensors"
    junk.write_bytes(b"<html>not found</html>")
    broken = doctor.base_model("models.x", ModelSettings(path=str(junk), family="sd15"))
    assert broken.status == "FAIL" and "not a readable safetensors file" in broken.message
    hub = doctor.base_model("models.x", ModelSettings(
        path="stabilityai/stable-diffusion-xl-base-1.0", family="sdxl"))
    assert hub.status == "WARN" and "download it from the Hugging Face hub" in hub.message


def test_the_reason_a_trainer_does_not_start_is_shown(tmp_path, config):
    python = tmp_path / "broken-python"
    python.write_text("#!/bin/sh\necho 'Traceback (most recent call last):' >&2\n"
                      "echo \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n")
    python.chmod(0o755)
    settings = load_settings(config(kohya={"python": str(python)}))
    check = doctor.trainer_starts(settings, str(python))
    assert check.status == "FAIL"
    assert "exited with status 1: ModuleNotFoundError: No module named 'torch'" in check.message


def test_blip_is_found_in_the_hugging_face_cache_or_said_to_be_downloaded(tmp_path, config,
                                                                         monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    settings = load_settings(config(caption={"model": "Salesforce/blip-image-captioning-large"}))
    missing = doctor.blip(settings)
    assert missing.status == "WARN" and "downloaded on first use" in missing.message
    snapshot = (tmp_path / "hub" / "models--Salesforce--blip-image-captioning-large"
                / "snapshots" / "abc123")
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    assert doctor.blip(settings).status == "OK"


@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch):
    bin_dir = tmp_path / "gpu-bin"
    bin_dir.mkdir()
    tool = bin_dir / "nvidia-smi"
    tool.write_text("#!/bin/sh\necho '0, NVIDIA Test GPU, 24564, 8.6'\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    visible_gpus.cache_clear()
    yield
    visible_gpus.cache_clear()


def test_each_configured_gpu_is_listed_with_memory_and_bf16(config, fake_nvidia_smi):
    settings = load_settings(config(gpus=[0, 1]))
    checks = {c.name: c for c in doctor.gpus(settings)}
    assert checks["GPU 0"].status == "OK"
    assert checks["GPU 0"].message == "NVIDIA Test GPU, 24 GB, bf16 yes"
    assert checks["GPU 1"].status == "FAIL"
    assert "nvidia-smi shows only [0]" in checks["GPU 1"].message


def test_low_inotify_limits_warn_and_a_polled_inbox_needs_none(tmp_path):
    proc = tmp_path / "inotify"
    proc.mkdir()
    (proc / "max_user_watches").write_text("65536\n")
    (proc / "max_user_instances").write_text("8\n")
    low = doctor.inotify_limits("native", proc)
    assert low.status == "WARN" and "max_user_instances = 8" in low.message
    assert doctor.inotify_limits("poll", proc).status == "OK"
