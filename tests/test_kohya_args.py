"""Argument dictionaries: rendering to argv, the known-argument checks, layering, overrides."""

from __future__ import annotations

import pytest

from lorad.subject import TrainOverrides
from lorad.training.kohya.args import (
    KNOWN_ARGS,
    SDXL_ONLY_ARGS,
    apply_overrides,
    check_args,
    merge,
    to_argv,
    unknown_args,
)


def test_true_is_a_bare_flag_and_false_or_none_leave_the_option_out() -> None:
    argv = to_argv({"sdpa": True, "xformers": False, "seed": None, "cache_latents": True})
    assert argv == ["--sdpa", "--cache_latents"]


def test_lists_fill_nargs_options_and_empty_lists_are_left_out() -> None:
    argv = to_argv({"optimizer_args": ["weight_decay=0.1", "betas=0.9,0.99"],
                    "text_encoder_lr": [4e-5, 2e-5], "network_args": []})
    assert argv == ["--optimizer_args", "weight_decay=0.1", "betas=0.9,0.99",
                    "--text_encoder_lr", "4e-05", "2e-05"]


@pytest.mark.parametrize(
    ("value", "text"),
    [(4e-4, "0.0004"), (0.1 + 0.2, "0.30000000000000004"), (1e-4, "0.0001"), (5e-5, "5e-05"),
     (16.0, "16.0"), (32, "32"), ("cosine", "cosine")],
)
def test_values_render_exactly_and_shortest(value: object, text: str) -> None:
    assert to_argv({"learning_rate": value}) == ["--learning_rate", text]


def test_a_value_starting_with_a_dash_is_joined_so_argparse_reads_it_as_a_value() -> None:
    assert to_argv({"lr_scheduler_power": -1.5}) == ["--lr_scheduler_power=-1.5"]
    with pytest.raises(ValueError, match="cannot start with '-'"):
        to_argv({"optimizer_args": ["--resume"]})


def test_option_names_must_look_like_kohyas() -> None:
    with pytest.raises(ValueError, match="not a Kohya option"):
        to_argv({"seed --resume": 1})


def test_argument_tables_come_from_the_reference() -> None:
    assert len(KNOWN_ARGS) == 193
    assert {"network_dim", "optimizer_args", "sdpa", "lr_warmup_steps"} <= KNOWN_ARGS
    sdxl_only = {"cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk",
                 "disable_mmap_load_safetensors"}
    assert sdxl_only == SDXL_ONLY_ARGS
    assert not SDXL_ONLY_ARGS & KNOWN_ARGS


def test_unknown_args_names_what_the_family_script_would_reject() -> None:
    args = {"network_dim": 32, "text_encoder_lr1": 1e-5, "cache_text_encoder_outputs": True}
    assert unknown_args(args, "sd15") == ["text_encoder_lr1", "cache_text_encoder_outputs"]
    assert unknown_args(args, "sdxl") == ["text_encoder_lr1"]


def test_check_args_finds_what_argparse_would_reject() -> None:
    problems = check_args(
        {"mixed_precision": "auto", "train_batch_size": 2.5, "sdpa": "yes", "seed": True,
         "resolution": [512, 512], "max_token_length": 75, "lr_warmup_steps": 0.1,
         "network_alpha": "16"},
        "sd15",
    )
    assert problems == [
        "mixed_precision: 'auto' is not one of no, fp16, bf16",
        "train_batch_size: '2.5' is not a whole number",
        "sdpa: is a flag; use true or false, not 'yes'",
        "seed: needs a value, not true",
        "resolution: takes one value, not a list ([512, 512])",
        "max_token_length: '75' is not one of 150, 225",
    ]


def test_unknown_family_is_an_error() -> None:
    with pytest.raises(ValueError, match="sd2"):
        unknown_args({}, "sd2")


def test_merge_lets_later_layers_win_and_none_remove_an_option() -> None:
    base = {"seed": 42, "unet_lr": 1e-4, "sdpa": True}
    merged = merge(base, {"seed": 7, "unet_lr": None}, None, {"sdpa": False, "clip_skip": 1})
    assert merged == {"seed": 7, "sdpa": False, "clip_skip": 1}
    assert base == {"seed": 42, "unet_lr": 1e-4, "sdpa": True}


def test_weight_decay_override_replaces_the_optimizer_args_entry() -> None:
    args = {"optimizer_args": ["weight_decay=0.1", "betas=0.9,0.99"]}
    result = apply_overrides(args, {"weight_decay": 0.05})
    assert result["optimizer_args"] == ["betas=0.9,0.99", "weight_decay=0.05"]
    assert args["optimizer_args"] == ["weight_decay=0.1", "betas=0.9,0.99"]
    assert apply_overrides({}, {"weight_decay": 0.0})["optimizer_args"] == ["weight_decay=0.0"]


def test_overrides_from_lora_toml_map_one_to_one_onto_kohya() -> None:
    overrides = TrainOverrides.model_validate(
        {"network_dim": 16, "network_alpha": 8, "unet_lr": 2e-4, "resolution": 768,
         "mixed_precision": "auto", "shuffle_caption": True, "lr_scheduler": "constant"}
    ).set_values()
    result = apply_overrides({"network_dim": 32, "shuffle_caption": False}, overrides)
    assert result == {"network_dim": 16, "shuffle_caption": True, "network_alpha": 8.0,
                      "unet_lr": 2e-4, "resolution": 768, "mixed_precision": "auto",
                      "lr_scheduler": "constant"}


def test_text_encoder_lr_zero_trains_the_unet_only() -> None:
    result = apply_overrides({"text_encoder_lr": 5e-5}, {"text_encoder_lr": 0.0})
    assert result == {"network_train_unet_only": True}
    again = apply_overrides(result, {"text_encoder_lr": 1e-5})
    assert again == {"text_encoder_lr": 1e-5}


def test_sampling_every_zero_steps_or_epochs_means_off() -> None:
    preset = {"sample_every_n_epochs": 1, "sample_every_n_steps": 100}
    result = apply_overrides(preset, {"sample_every_n_epochs": 0})
    assert result == {"sample_every_n_steps": 100}


def test_epochs_override_sets_max_train_epochs() -> None:
    assert apply_overrides({"max_train_epochs": 6}, {"epochs": 10}) == {"max_train_epochs": 10}
