"""Kohya's command-line arguments as data: which exist, how a dict becomes argv, how layers stack.

An argument dictionary maps Kohya's option names (without dashes) to values: True is a flag,
False and None leave the option out, a list fills an nargs option, anything else is one value.
The tables below are train_network.py's options as listed in kohya-args.md (sd-scripts 48d368fa);
sdxl_train_network.py adds SDXL_ONLY_ARGS.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

FAMILIES = ("sd15", "sdxl")

_FLAGS = """
    console_log_simple v2 v_parameterization cache_info shuffle_caption enable_wildcard color_aug
    flip_aug random_crop debug_dataset cache_latents cache_latents_to_disk skip_cache_check
    enable_bucket bucket_no_upscale alpha_mask save_state_to_huggingface resume_from_huggingface
    async_upload save_state save_state_on_train_end mem_eff_attn torch_compile xformers sdpa
    persistent_data_loader_workers gradient_checkpointing full_fp16 full_bf16 fp8_base
    ddp_gradient_as_bucket_view ddp_static_graph log_config noise_offset_random_strength
    ip_noise_gamma_random_strength zero_terminal_snr lowram highvram sample_at_first output_config
    masked_loss deepspeed zero3_init_flag zero3_save_16bit_model fp16_master_weights_and_gradients
    use_8bit_adam use_lion_optimizer fused_backward_pass scale_v_pred_loss_like_noise_pred
    debiased_estimation_loss weighted_captions cpu_offload_checkpointing no_metadata fp8_base_unet
    network_train_unet_only network_train_text_encoder_only dim_from_weights no_half_vae
    skip_until_initial_step
"""
_INTS = """
    keep_tokens vae_batch_size min_bucket_reso max_bucket_reso bucket_reso_steps token_warmup_min
    caption_dropout_every_n_epochs dataset_repeats save_every_n_epochs save_every_n_steps
    save_n_epoch_ratio save_last_n_epochs save_last_n_epochs_state save_last_n_steps
    save_last_n_steps_state train_batch_size max_token_length max_train_steps max_train_epochs
    max_data_loader_n_workers seed gradient_accumulation_steps ddp_timeout clip_skip
    multires_noise_iterations min_timestep max_timestep sample_every_n_steps sample_every_n_epochs
    zero_stage lr_scheduler_num_cycles lr_scheduler_timescale network_dim initial_epoch
    initial_step validation_seed validate_every_n_steps validate_every_n_epochs
    max_validation_steps
"""
_FLOATS = """
    token_warmup_step caption_dropout_rate caption_tag_dropout_rate noise_offset ip_noise_gamma
    multires_noise_discount adaptive_noise_scale huber_c huber_scale prior_loss_weight
    learning_rate max_grad_norm lr_scheduler_power lr_scheduler_min_lr_ratio min_snr_gamma
    v_pred_like_loss unet_lr text_encoder_lr network_alpha network_dropout scale_weight_norms
    base_weights_multiplier validation_split
"""
# An int is a number of steps, a float below 1 a share of all steps.
_INTS_OR_FLOATS = "lr_warmup_steps lr_decay_steps"
_STRINGS = """
    console_log_level console_log_file pretrained_model_name_or_path tokenizer_cache_dir
    metadata_title metadata_author metadata_description metadata_license metadata_tags
    metadata_usage_hint metadata_thumbnail metadata_merged_from metadata_trigger_phrase
    metadata_preprocessor metadata_is_negative_embedding train_data_dir caption_separator
    caption_extension caption_extention keep_tokens_separator secondary_separator caption_prefix
    caption_suffix face_crop_aug_range resolution resize_interpolation dataset_class reg_data_dir
    in_json output_dir output_name huggingface_repo_id huggingface_repo_type
    huggingface_path_in_repo huggingface_token huggingface_repo_visibility save_precision resume
    dynamo_backend vae mixed_precision logging_dir log_with log_prefix log_tracker_name
    wandb_run_name log_tracker_config wandb_api_key loss_type huber_schedule sample_prompts
    sample_sampler config_file conditioning_data_dir offload_optimizer_device
    offload_optimizer_nvme_path offload_param_device offload_param_nvme_path optimizer_type
    optimizer_args lr_scheduler_type lr_scheduler_args lr_scheduler save_model_as network_weights
    network_module network_args training_comment base_weights dataset_config
"""

SDXL_ONLY_ARGS = frozenset(
    {"cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk",
     "disable_mmap_load_safetensors"}
)
FLAG_ARGS = frozenset(_FLAGS.split()) | SDXL_ONLY_ARGS
INT_ARGS = frozenset(_INTS.split())
FLOAT_ARGS = frozenset(_FLOATS.split())
INT_OR_FLOAT_ARGS = frozenset(_INTS_OR_FLOATS.split())
STR_ARGS = frozenset(_STRINGS.split())
# Options with nargs="*": they take a list (`--name v1 v2`).
LIST_ARGS = frozenset(
    {"optimizer_args", "lr_scheduler_args", "text_encoder_lr", "network_args", "base_weights",
     "base_weights_multiplier"}
)
# Options whose values argparse checks against a list (after converting them to their type).
CHOICES: dict[str, tuple[str, ...]] = {
    "console_log_level": ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    "resize_interpolation": ("lanczos", "nearest", "bilinear", "linear", "bicubic", "cubic",
                             "area"),
    "save_precision": ("float", "fp16", "bf16"),
    "max_token_length": ("150", "225"),
    "dynamo_backend": ("eager", "aot_eager", "inductor", "aot_ts_nvfuser", "nvprims_nvfuser",
                       "cudagraphs", "ofi", "fx2trt", "onnxrt", "tensort", "ipex", "tvm"),
    "mixed_precision": ("no", "fp16", "bf16"),
    "log_with": ("tensorboard", "wandb", "all"),
    "loss_type": ("l1", "l2", "huber", "smooth_l1"),
    "huber_schedule": ("constant", "exponential", "snr"),
    "sample_sampler": ("ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm_2", "dpm_2_a",
                       "dpmsolver", "dpmsolver++", "dpmsingle", "k_lms", "k_euler", "k_euler_a",
                       "k_dpm_2", "k_dpm_2_a"),
    "zero_stage": ("0", "1", "2", "3"),
    "offload_optimizer_device": ("cpu", "nvme"),
    "offload_param_device": ("cpu", "nvme"),
    "save_model_as": ("ckpt", "pt", "safetensors"),
}
# The options of train_network.py (SD1.5); sdxl_train_network.py also knows SDXL_ONLY_ARGS.
KNOWN_ARGS = (FLAG_ARGS - SDXL_ONLY_ARGS) | INT_ARGS | FLOAT_ARGS | INT_OR_FLOAT_ARGS | STR_ARGS

_NAME = re.compile(r"^[a-z0-9_]+$")
# Samples are taken every N steps or epochs; 0 would divide by zero inside Kohya, so 0 means off.
_ZERO_IS_OFF = ("sample_every_n_steps", "sample_every_n_epochs")


def known_args(family: str) -> frozenset[str]:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {', '.join(FAMILIES)}")
    return KNOWN_ARGS | SDXL_ONLY_ARGS if family == "sdxl" else KNOWN_ARGS


def unknown_args(args: Mapping[str, Any], family: str) -> list[str]:
    """Names in args that the family's training script does not have (argparse would exit 2)."""
    known = known_args(family)
    return [name for name in args if name not in known]


def check_args(args: Mapping[str, Any], family: str) -> list[str]:
    """Everything argparse would reject in args, one message per problem, each naming the option.

    Covers unknown names, flags given a value, options given no value, lists for single-value
    options, values that do not convert to the option's type, and values outside its choices.
    """
    unknown = unknown_args(args, family)
    problems = [f"{name}: no such option in Kohya's {family} script" for name in unknown]
    for name, value in args.items():
        if name not in unknown and value is not None:
            problems.extend(f"{name}: {problem}" for problem in _value_problems(name, value))
    return problems


def _value_problems(name: str, value: Any) -> list[str]:
    if name in FLAG_ARGS:
        return [] if isinstance(value, bool) else [f"is a flag; use true or false, not {value!r}"]
    if isinstance(value, bool):
        return [] if value is False else ["needs a value, not true"]
    if isinstance(value, list | tuple):
        if name not in LIST_ARGS:
            return [f"takes one value, not a list ({value!r})"]
        return [problem for item in value for problem in _value_problems_one(name, item)]
    return _value_problems_one(name, value)


def _value_problems_one(name: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        return [f"{value!r} is not a value"]
    text = render_value(value)
    convert, kind = _CONVERTERS.get(name, (None, ""))
    if convert is not None:
        try:
            convert(text)
        except ValueError:
            return [f"{text!r} is not {kind}"]
    if name in CHOICES and text not in CHOICES[name]:
        return [f"{text!r} is not one of {', '.join(CHOICES[name])}"]
    return []


def _int_or_float(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


# How argparse converts each typed option's text, and what to call that type in a message.
_CONVERTERS: dict[str, tuple[Any, str]] = {
    **dict.fromkeys(INT_ARGS, (int, "a whole number")),
    **dict.fromkeys(FLOAT_ARGS, (float, "a number")),
    **dict.fromkeys(INT_OR_FLOAT_ARGS, (_int_or_float, "a number")),
}


def render_value(value: Any) -> str:
    """One value as Kohya reads it: floats in their shortest exact form (0.0004, 4e-05)."""
    if isinstance(value, bool):
        raise TypeError("a boolean is a flag, not a value")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def to_argv(args: Mapping[str, Any]) -> list[str]:
    """The command-line arguments for args, in its order.

    True gives `--name`; False, None and empty lists give nothing; a list gives `--name v1 v2`.
    A single value that starts with "-" is written `--name=value` so that argparse cannot take it
    for an option; a list item cannot be written that way and is refused.
    """
    argv: list[str] = []
    for name, value in args.items():
        if not _NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a Kohya option name")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(f"--{name}")
        elif isinstance(value, list | tuple):
            items = [render_value(item) for item in value]
            if any(item.startswith("-") for item in items):
                raise ValueError(f"--{name}: list items cannot start with '-' ({items!r})")
            if items:
                argv += [f"--{name}", *items]
        else:
            text = render_value(value)
            argv += [f"--{name}={text}"] if text.startswith("-") else [f"--{name}", text]
    return argv


def merge(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Stack argument layers: a later layer's value wins, and None there removes the option."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for name, value in (layer or {}).items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
    return merged


def _with_optimizer_arg(args: Mapping[str, Any], key: str, value: Any) -> dict[str, Any]:
    """args with `key=value` in optimizer_args, replacing an earlier entry for key."""
    entries = [entry for entry in args.get("optimizer_args") or []
               if str(entry).split("=", 1)[0] != key]
    return {**args, "optimizer_args": [*entries, f"{key}={render_value(value)}"]}


def apply_overrides(args: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """args with a subject's [train] overrides (TrainOverrides.set_values()) applied.

    The names are Kohya's except: epochs -> max_train_epochs; weight_decay -> an optimizer_args
    entry; text_encoder_lr 0 -> network_train_unet_only (Kohya would keep untrained text-encoder
    modules in the file); sample_every_n_steps/epochs 0 -> off. mixed_precision may stay "auto"
    for the caller to resolve.
    """
    result = dict(args)
    for name, value in overrides.items():
        if name == "weight_decay":
            result = _with_optimizer_arg(result, "weight_decay", value)
        elif name == "epochs":
            result["max_train_epochs"] = value
        elif name == "text_encoder_lr" and value == 0:
            result.pop("text_encoder_lr", None)
            result["network_train_unet_only"] = True
        elif name == "text_encoder_lr":
            result.pop("network_train_unet_only", None)
            result["text_encoder_lr"] = value
        elif name in _ZERO_IS_OFF and value == 0:
            result.pop(name, None)
        else:
            result[name] = value
    return result
