"""lorad's training stage against the real Kohya sd-scripts (the CPU peer of shared/kohya-peer).

Set LORAD_KOHYA_PEER to the peer's folder (PEER_DIR: sd-scripts/, venv/, tiny-sd15/,
tokenizer_cache/); without it every test here is skipped, saying so. The settings are the peer
README's for a CPU: 64 px through a kohya_ss GUI preset, AdamW, network_dim 4, batch 2, one
epoch, repeats 1, no samples (a sample takes about a minute on a CPU). Each test is 1-2 minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from lorad.system import gpus
from lorad.system.safetensors import read_header
from lorad.training import stage as train
from tests.jobs import arg, context, prepared_job

PEER = os.environ.get("LORAD_KOHYA_PEER")
pytestmark = pytest.mark.skipif(
    not PEER, reason="LORAD_KOHYA_PEER is not set: the real Kohya peer (shared/kohya-peer) "
                     "is not available here")
CPU_TRAIN = {"optimizer_type": "AdamW", "network_dim": 4, "train_batch_size": 2,
             "sample_every_n_epochs": 0}
PEER_GUI = {"LoRA_type": "Standard", "max_resolution": "64,64", "enable_bucket": True,
            "min_bucket_reso": 64, "max_bucket_reso": 256, "bucket_reso_steps": 64}


@pytest.fixture
def real_config(config, tmp_path):
    """config() pointed at the peer: its sd-scripts, python, tokenizers and tiny SD1.5."""
    peer = Path(PEER or "")

    def write(gui: dict, **kohya) -> Path:
        preset = tmp_path / "peer-gui.json"
        preset.write_text(json.dumps(gui))
        return config(default_model="tiny", models={"tiny": {
            "path": str(peer / "tiny-sd15"), "family": "sd15"}}, kohya={
            "sd_scripts": str(peer / "sd-scripts"), "python": str(peer / "venv/bin/python"),
            "tokenizer_cache_dir": str(peer / "tokenizer_cache"), "preset": str(preset),
            "stall_minutes": 5.0, "max_attempts": 1, "env": {"HF_HUB_OFFLINE": "1"}, **kohya})

    gpus.gpus.cache_clear()
    yield write
    gpus.gpus.cache_clear()


def trained(ctx, job_id: int) -> list[str]:
    return sorted(p.name for p in ctx.paths(ctx.store.get(job_id)).epochs.glob("*.safetensors"))


def test_auto_precision_without_a_gpu_trains_on_the_cpu(real_config):
    assert not gpus.any_visible(), "this check is for a machine without a GPU"
    ctx = context(real_config(PEER_GUI, mixed_precision="auto"))
    job_id = prepared_job(ctx, model="tiny", subject={"epochs": 1, "repeats": 1,
                                                      "train": CPU_TRAIN})
    train.run(ctx, ctx.store.get(job_id), 0)
    argv = ctx.store.get(job_id).train["runs"][0]["argv"]
    assert arg(argv, "--mixed_precision") == "no"
    assert trained(ctx, job_id) == ["alice-000001.safetensors"]
    # The real trainer writes the token into the LoRA's metadata, for the UIs that show it.
    lora = ctx.paths(ctx.store.get(job_id)).epochs / "alice-000001.safetensors"
    metadata = read_header(lora).table["__metadata__"]
    assert metadata["modelspec.trigger_phrase"] == "alice"
    assert metadata["modelspec.title"] == "alice"


def test_a_resolution_below_the_presets_min_bucket_trains(real_config):
    # lorad's SD1.5 preset has min_bucket_reso 256; the GUI preset asks for 64 px and sets no
    # limits of its own, so lorad lowers the minimum (Kohya would assert otherwise)
    gui = {k: v for k, v in PEER_GUI.items() if not k.endswith("_bucket_reso")}
    ctx = context(real_config(gui))
    job_id = prepared_job(ctx, model="tiny", subject={
        "epochs": 1, "repeats": 1, "train": {**CPU_TRAIN, "mixed_precision": "no"}})
    train.run(ctx, ctx.store.get(job_id), 0)
    argv = ctx.store.get(job_id).train["runs"][0]["argv"]
    assert (arg(argv, "--resolution"), arg(argv, "--min_bucket_reso")) == ("64", "64")
    assert trained(ctx, job_id) == ["alice-000001.safetensors"]


KOHYA_CHECK = """
import sys
import train_network
from library import train_util
args = train_network.setup_parser().parse_args(sys.argv[1:])
train_util.prepare_dataset_args(args, True)
print(train_util.BaseDataset.adjust_min_max_bucket_reso_by_steps(
    None, args.resolution, args.min_bucket_reso, args.max_bucket_reso, args.bucket_reso_steps))
"""


def test_sd15_at_1088_passes_sd_scripts_own_bucket_check(real_config):
    # Training at 1088 px takes far too long on a CPU: the command lorad builds goes through
    # sd-scripts' own parser and adjust_min_max_bucket_reso_by_steps instead
    ctx = context(real_config({"LoRA_type": "Standard"}))
    job_id = prepared_job(ctx, model="tiny", subject={"epochs": 1, "train": {"resolution": 1088}})
    plan = train.plan_run(ctx, ctx.store.get(job_id), 0, {"target": 1})
    assert plan is not None and "--enable_bucket" in plan.argv
    peer = Path(PEER or "")
    checked = subprocess.run([str(peer / "venv/bin/python"), "-c", KOHYA_CHECK, *plan.argv[2:]],
                             cwd=peer / "sd-scripts", capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert checked.stdout.strip().splitlines()[-1] == "(256, 1088)"
