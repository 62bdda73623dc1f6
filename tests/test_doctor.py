"""`lorad doctor`: one line per finding, OK / WARN / FAIL, and exit status 1 when anything fails."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lorad.doctor.blip import blip
from lorad.doctor.check import GB, Check
from lorad.doctor.disk import disk_space
from lorad.doctor.folders import claim_move, folder, layout
from lorad.doctor.gpus import cpu_training, gpus, uvm_device
from lorad.doctor.kohya import presets, trainer_starts
from lorad.doctor.models import base_model
from lorad.doctor.watching import inotify_limits
from lorad.settings import ModelSettings, Settings, load_settings
from lorad.system.gpus import gpus as visible_gpus

GUI_SD15 = Path(__file__).parent / "data" / "kohya" / "gui_sd15.json"
NOBODY = 65534

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
                 "claiming", "watching", "inotify", "disk space", "Kohya", "accelerate",
                 "models.sd15", "models.sdxl", "BLIP", "notifications", "test notification"):
        assert name in found, f"no {name} line in {lines}"
    assert found["Kohya"][0] == "OK" and "sdxl_train_network.py --help" in found["Kohya"][1]
    assert found["claiming"][0] == "OK" and "with one rename" in found["claiming"][1]
    assert [p.name for p in (tmp_path / "inbox").iterdir()] == []  # its test folder is gone
    assert found["accelerate"][0] == "OK"
    assert found["models.sd15"][0] == "OK"
    assert "an SD1.5 model as configured" in found["models.sd15"][1]
    assert "an SDXL model as configured" in found["models.sdxl"][1]
    assert found["test notification"][0] == "OK"
    assert [m["title"] for m in hook.wait_for(1)] == ["lorad: test notification"]


def test_missing_kohya_a_missing_model_and_a_bad_url_each_fail_and_exit_1(tmp_path, config):
    good_models(tmp_path)
    cfg = config(kohya={"sd_scripts": str(tmp_path / "no-sd-scripts"),
                        "preset": str(tmp_path / "no-preset.json")},
                 models={"sd15": {"path": str(tmp_path / "models" / "gone.safetensors")}},
                 notify={"urls": ["nosuchservice://somewhere"]})
    status, lines = run_doctor(cfg, tmp_path)
    failed = {name: message for s, name, message in lines if s == "FAIL"}
    assert status == 1
    assert sorted(failed) == ["Kohya", "kohya.preset", "models.sd15", "notifications"], lines
    assert "no-preset.json: cannot read it (No such file or directory)" in failed["kohya.preset"]
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
    check = base_model("models.sd15", ModelSettings(path=str(sdxl_file), family="sd15"))
    assert check.status == "FAIL"
    assert 'is an SDXL model but family = "sd15"; set family = "sdxl"' in check.message


def test_a_file_that_is_not_safetensors_fails_and_a_hub_name_warns(tmp_path):
    junk = tmp_path / "model.safetensors"
    junk.write_bytes(b"<html>not found</html>")
    broken = base_model("models.x", ModelSettings(path=str(junk), family="sd15"))
    assert broken.status == "FAIL" and "not a readable safetensors file" in broken.message
    hub = base_model("models.x", ModelSettings(
        path="stabilityai/stable-diffusion-xl-base-1.0", family="sdxl"))
    assert hub.status == "WARN" and "download it from the Hugging Face hub" in hub.message


def test_the_reason_a_trainer_does_not_start_is_shown(tmp_path, config):
    python = tmp_path / "broken-python"
    python.write_text("#!/bin/sh\necho 'Traceback (most recent call last):' >&2\n"
                      "echo \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n")
    python.chmod(0o755)
    settings = load_settings(config(kohya={"python": str(python)}))
    check = trainer_starts(settings, str(python))
    assert check.status == "FAIL"
    assert "exited with status 1: ModuleNotFoundError: No module named 'torch'" in check.message


def test_blip_is_found_in_the_hugging_face_cache_or_said_to_be_downloaded(tmp_path, config,
                                                                         monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    settings = load_settings(config(caption={"model": "Salesforce/blip-image-captioning-large"}))
    missing = blip(settings)
    assert missing.status == "WARN" and "downloaded on first use" in missing.message
    snapshot = (tmp_path / "hub" / "models--Salesforce--blip-image-captioning-large"
                / "snapshots" / "abc123")
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    assert blip(settings).status == "OK"


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
    checks = {c.name: c for c in gpus(settings)}
    assert checks["GPU 0"].status == "OK"
    assert checks["GPU 0"].message == "NVIDIA Test GPU, 24 GB, bf16 yes"
    assert checks["GPU 1"].status == "FAIL"
    assert "nvidia-smi shows only [0]" in checks["GPU 1"].message


def test_training_on_the_cpu_is_a_warning_that_it_is_very_slow(config, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi: no GPU visible
    visible_gpus.cache_clear()
    try:
        found = cpu_training(load_settings(config()))
        forced = cpu_training(load_settings(config(kohya={"mixed_precision": "fp16"})))
    finally:
        visible_gpus.cache_clear()
    assert found is not None and found.status == "WARN"
    assert "trains on the CPU" in found.message and "very slow" in found.message
    assert '"auto" becomes "no"' in found.message
    assert forced is not None and 'kohya.mixed_precision = "fp16" crashes' in forced.message


def test_no_cpu_training_warning_where_a_gpu_is_visible(config, fake_nvidia_smi):
    assert cpu_training(load_settings(config())) is None


def test_low_inotify_limits_warn_and_a_polled_inbox_needs_none(tmp_path):
    proc = tmp_path / "inotify"
    proc.mkdir()
    (proc / "max_user_watches").write_text("65536\n")
    (proc / "max_user_instances").write_text("8\n")
    low = inotify_limits("native", proc)
    assert low.status == "WARN" and "max_user_instances = 8" in low.message
    assert inotify_limits("poll", proc).status == "OK"


# ---- folders ------------------------------------------------------------------------------
def unprivileged(check: Callable[[], Check]) -> Check:
    """check() run by a user with no special rights: this one, or nobody when the tests run as
    root (root may write anywhere, so it would never see a folder it cannot write to)."""
    if os.geteuid() != 0:
        return check()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            found = check()
            os.write(write, json.dumps([found.status, found.name, found.message]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    assert data, "the check did not run as an unprivileged user"
    return Check(*json.loads(data))


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder that every user can reach (pytest's own is private to the user running it)."""
    root = Path(tempfile.mkdtemp(prefix="lorad-doctor-test-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_a_folder_lorads_user_cannot_write_to_fails(shared_tmp):
    outbox = shared_tmp / "outbox"
    outbox.mkdir(mode=0o555)
    outbox.chmod(0o555)  # not the umask's choice: readable, not writable
    check = unprivileged(lambda: folder("outbox", outbox, in_state_dir=False))
    assert check.status == "FAIL", check
    assert f"{outbox} is not writable by" in check.message
    assert "give that user write access" in check.message


def test_an_outbox_inside_the_inbox_is_a_layout_failure(tmp_path):
    # load_settings already refuses this layout: model_construct skips that validation, so
    # that doctor's own check is tested by itself
    inbox = tmp_path / "inbox"
    settings = Settings.model_construct(inbox=inbox, outbox=inbox / "results",
                                        state_dir=tmp_path / "state",
                                        failed=tmp_path / "state" / "failed")
    check = layout(settings)
    assert check.status == "FAIL"
    assert f"inbox ({inbox}) and outbox ({inbox / 'results'}) overlap" in check.message


def claiming_settings(tmp_path: Path) -> Settings:
    for name in ("inbox", "outbox", "state"):
        (tmp_path / name).mkdir()
    return Settings(inbox=tmp_path / "inbox", outbox=tmp_path / "outbox",
                    state_dir=tmp_path / "state")


def test_claiming_is_tried_with_a_real_rename_and_leaves_nothing_behind(tmp_path):
    settings = claiming_settings(tmp_path)
    check = claim_move(settings)
    assert check.status == "OK" and "with one rename" in check.message
    assert list(settings.inbox.iterdir()) == [] and list(settings.state_dir.iterdir()) == []


def test_claiming_across_mounts_warns_that_folders_will_be_copied(tmp_path, monkeypatch):
    """What a rename between two bind mounts of one disk does (systemd's ReadWritePaths=), which
    the folders' device numbers cannot show."""
    settings = claiming_settings(tmp_path)

    def exdev(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src), None, str(dst))

    monkeypatch.setattr(os, "rename", exdev)
    check = claim_move(settings)
    assert check.status == "WARN"
    assert "different filesystems or mounts" in check.message
    assert "copied, verified and then deleted" in check.message
    assert list(settings.inbox.iterdir()) == []


def test_claiming_that_cannot_rename_at_all_fails(tmp_path, monkeypatch):
    settings = claiming_settings(tmp_path)

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(src))

    monkeypatch.setattr(os, "rename", refuse)
    check = claim_move(settings)
    assert check.status == "FAIL" and "Permission denied" in check.message
    assert list(settings.inbox.iterdir()) == []


# ---- disk space -----------------------------------------------------------------------------
@pytest.mark.parametrize(("free_gb", "status", "advice"), [
    (0.5, "FAIL", "free some space before starting lorad"),
    (10.0, "WARN", "a training may stop with a full disk"),
    (40.0, "OK", None),
])
def test_the_disk_space_line_compares_free_space_with_what_a_training_needs(
        tmp_path, monkeypatch, free_gb, status, advice):
    settings = claiming_settings(tmp_path)
    settings.models = {"sdxl": ModelSettings(path="x.safetensors", family="sdxl")}
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda path: usage._replace(free=int(free_gb * GB)))
    [check] = disk_space(settings)  # state_dir and outbox share tmp_path's filesystem
    assert (check.name, check.status) == ("disk space", status)
    assert check.message.startswith(f"{free_gb:.1f} GB free for state_dir and outbox (one "
                                    "filesystem")
    assert "one SDXL training needs about 19 GB" in check.message
    assert advice is None or advice in check.message


# ---- kohya_ss GUI presets -------------------------------------------------------------------
def test_a_usable_gui_preset_is_ok_and_lists_what_it_ignores(config):
    settings = load_settings(config(models={"sd15": {"preset": str(GUI_SD15)}}))
    [check] = presets(settings)
    assert (check.status, check.name) == ("OK", "models.sd15.preset")
    assert f"{GUI_SD15} is used:" in check.message
    assert "ignored key 'caption_extension': lorad sets this itself" in check.message


def test_a_daemon_wide_gui_preset_fails_when_a_model_of_the_other_family_would_use_it(config):
    settings = load_settings(config(kohya={"preset": str(GUI_SD15)}))  # sd15 and sdxl models
    [check] = presets(settings)
    assert (check.status, check.name) == ("FAIL", "kohya.preset")
    assert "sdxl" in check.message and "fix the file or remove kohya.preset" in check.message


def test_a_gui_preset_that_cannot_be_used_fails_with_its_reason(tmp_path, config):
    data = json.loads(GUI_SD15.read_text())
    data["additional_parameters"] = "--max_train_steps 5"
    broken = tmp_path / "broken-preset.json"
    broken.write_text(json.dumps(data))
    settings = load_settings(config(models={"sd15": {"preset": str(broken)}}))
    [check] = presets(settings)
    assert (check.status, check.name) == ("FAIL", "models.sd15.preset")
    assert f"{broken}: key 'additional_parameters': refused" in check.message
    assert "fix the file or remove models.sd15.preset" in check.message


# ---- nvidia-uvm -----------------------------------------------------------------------------
PROC_DEVICES = """Character devices:
  1 mem
  4 tty
195 nvidia
195 nvidiactl
{uvm}
Block devices:
  8 sd
"""


def devices_file(tmp_path: Path, uvm: str) -> Path:
    path = tmp_path / "devices"
    path.write_text(PROC_DEVICES.format(uvm=uvm))
    return path


def test_nvidia_uvm_loaded_with_its_node_is_ok(tmp_path):
    node = tmp_path / "nvidia-uvm"
    node.touch()
    check = uvm_device(devices_file(tmp_path, "510 nvidia-uvm"), node)
    assert check is not None and check.status == "OK"


def test_nvidia_uvm_not_loaded_and_without_a_node_warns_how_to_fix_both(tmp_path):
    node = tmp_path / "nvidia-uvm"
    check = uvm_device(devices_file(tmp_path, ""), node)
    assert check is not None and check.status == "WARN"
    assert "lists no nvidia-uvm" in check.message
    assert "/etc/modules-load.d/nvidia-uvm.conf" in check.message
    assert f"{node} does not exist" in check.message and "nvidia-modprobe -u -c=0" in check.message


def test_a_missing_uvm_node_alone_warns(tmp_path):
    check = uvm_device(devices_file(tmp_path, "510 nvidia-uvm"), tmp_path / "nvidia-uvm")
    assert check is not None and check.status == "WARN"
    assert "lists no nvidia-uvm" not in check.message and "does not exist" in check.message


def test_without_any_nvidia_driver_the_uvm_check_is_skipped(tmp_path):
    devices = tmp_path / "devices"
    devices.write_text("Character devices:\n  1 mem\n  4 tty\n\nBlock devices:\n  8 sd\n")
    assert uvm_device(devices, tmp_path / "nvidia-uvm") is None
    assert uvm_device(tmp_path / "no-proc-devices", tmp_path / "nvidia-uvm") is None
