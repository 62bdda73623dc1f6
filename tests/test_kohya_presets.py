"""The training presets: data files of Kohya arguments, with the guide's values."""

from __future__ import annotations

import pytest

from lorad.training.kohya.args import KNOWN_ARGS, SDXL_ONLY_ARGS, check_args, to_argv
from lorad.training.kohya.presets import load_preset


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_presets_hold_only_arguments_the_family_script_knows(family: str) -> None:
    preset = load_preset(family)
    allowed = KNOWN_ARGS | SDXL_ONLY_ARGS if family == "sdxl" else KNOWN_ARGS
    assert set(preset) <= allowed


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_presets_pass_kohyas_checks_once_auto_precision_is_resolved(family: str) -> None:
    preset = load_preset(family)
    if preset["mixed_precision"] == "auto":
        preset["mixed_precision"] = "bf16"
    assert check_args(preset, family) == []
    assert to_argv(preset)  # renders without complaint


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_presets_carry_the_guides_shared_values(family: str) -> None:
    preset = load_preset(family)
    assert preset["network_module"] == "networks.lora"
    assert (preset["network_dim"], preset["network_alpha"]) == (32, 16)
    assert preset["optimizer_type"] == "AdamW8bit"
    assert preset["lr_scheduler"].startswith("cosine")
    assert preset["min_snr_gamma"] == 5
    assert preset["save_every_n_epochs"] == 1
    assert preset["sample_every_n_steps"] == 100
    assert preset["sample_every_n_epochs"] == 1
    assert preset["sample_sampler"] == "euler_a"
    assert preset["caption_extension"] == ".txt"
    assert preset["save_model_as"] == "safetensors"
    assert preset["save_precision"] == "fp16"
    assert preset["sdpa"] is True
    assert preset["enable_bucket"] is True
    assert isinstance(preset["seed"], int)
    assert preset["max_data_loader_n_workers"] <= 4


def test_sd15_preset_trains_at_512_with_precision_following_the_gpu() -> None:
    preset = load_preset("sd15")
    assert preset["resolution"] == 512
    assert preset["mixed_precision"] == "auto"  # bf16 where the GPU has it, else the guide's fp16
    assert (preset["unet_lr"], preset["text_encoder_lr"]) == (1e-4, 5e-5)
    assert preset["max_train_epochs"] == 6


def test_sdxl_preset_uses_civitais_values() -> None:
    preset = load_preset("sdxl")
    assert (preset["unet_lr"], preset["text_encoder_lr"]) == (4e-4, 4e-5)
    assert preset["resolution"] == 1024
    assert preset["train_batch_size"] == 2
    # "cosine with 3 cycles": Kohya reads the cycles only for cosine_with_restarts.
    assert (preset["lr_scheduler"], preset["lr_scheduler_num_cycles"]) == (
        "cosine_with_restarts", 3)
    assert preset["lr_scheduler_num_cycles"] == 3
    assert preset["optimizer_args"] == ["weight_decay=0.1"]
    assert preset["clip_skip"] == 1
    assert preset["keep_tokens"] == 0
    assert preset["shuffle_caption"] is False
    assert preset["flip_aug"] is False
    assert preset["bucket_reso_steps"] % 32 == 0
    assert preset["mixed_precision"] == "auto"
    assert preset["no_half_vae"] is True
    assert preset["max_train_epochs"] == 16


def test_each_load_returns_a_fresh_dict() -> None:
    first = load_preset("sdxl")
    first["optimizer_args"].append("betas=0.9,0.99")
    assert load_preset("sdxl")["optimizer_args"] == ["weight_decay=0.1"]


def test_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="sd3"):
        load_preset("sd3")
