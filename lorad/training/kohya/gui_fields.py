"""The kohya_ss GUI's fields as lorad reads them: which are refused, which ignored (lorad sets
them, or they are the GUI's own), which pass to Kohya under their own name and type, and how a
field's value is converted to that type.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from lorad.subject import OPTIMIZERS

# Refused when they hold anything: paths and free-form arguments.
REFUSED = {
    "additional_parameters": "free-form command-line arguments",
    "extra_accelerate_launch_args": "free-form accelerate arguments",
    "network_weights": "a path to LoRA weights to start from",
    "lora_network_weights": "a path to LoRA weights to start from",
    "dataset_config": "a path to a dataset configuration file",
    "reg_data_dir": "a path to regularisation images, which lorad does not use",
    "vae": "a path to a separate VAE",
    "lr_scheduler_type": "a Python module for a custom scheduler",
}
EPOCHS_NOTE = ("lorad trains the subject's epochs (lora.toml's epochs, else its model family's "
               "preset: 6 for SD1.5, 16 for SDXL)")
# Ignored, because lorad decides them for every job.
LORAD_SETS = {
    key: "lorad sets this itself"
    for key in (
        "pretrained_model_name_or_path", "train_data_dir", "output_dir", "output_name",
        "logging_dir", "sample_prompts", "caption_extension", "resume", "save_state",
        "save_state_on_train_end", "save_every_n_epochs", "save_every_n_steps",
        "save_last_n_steps", "save_last_n_steps_state", "save_last_n_epochs",
        "save_last_n_epochs_state", "save_model_as", "training_comment", "metadata_author",
        "metadata_description", "metadata_license", "metadata_tags", "metadata_title",
    )
} | {
    "max_train_steps": "lorad trains by epochs",
    "epoch": EPOCHS_NOTE,
    "max_train_epochs": EPOCHS_NOTE,
    "use_wandb": "lorad does not log to trackers",
    "log_with": "lorad does not log to trackers",
    "wandb_api_key": "lorad does not log to trackers",
    "wandb_run_name": "lorad does not log to trackers",
    "log_tracker_name": "lorad does not log to trackers",
    "log_tracker_config": "lorad does not log to trackers",
    "log_config": "lorad does not log to trackers",
    "huggingface_repo_id": "lorad does not upload models",
    "huggingface_token": "lorad does not upload models",
    "huggingface_repo_type": "lorad does not upload models",
    "huggingface_repo_visibility": "lorad does not upload models",
    "huggingface_path_in_repo": "lorad does not upload models",
    "save_state_to_huggingface": "lorad does not upload models",
    "resume_from_huggingface": "lorad does not upload models",
    "async_upload": "lorad does not upload models",
    "dim_from_weights": "it needs network weights, which a preset cannot give",
}
# The GUI's own fields: they never reached Kohya, or only through a field mapped elsewhere.
GUI_ONLY = frozenset({
    "save_as_bool", "file_path", "training_preset", "model_list", "num_cpu_threads_per_process",
    "num_processes", "num_machines", "multi_gpu", "gpu_ids", "main_process_port",
    "dynamo_backend", "dynamo_mode", "dynamo_use_fullgraph", "dynamo_use_dynamic",
    "stop_text_encoder_training", "stop_text_encoder_training_pct", "no_token_padding",
    "lowvram", "use_8bit_adam", "LyCORIS_preset", "factor", "use_cp", "use_tucker",
    "use_scalar", "rank_dropout_scale", "constrain", "rescaled", "train_norm", "decompose_both",
    "train_on_input", "bypass_mode", "dora_wd", "unit", "loraplus_lr_ratio",
    "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio",
})

# Fields with Kohya's name and meaning; the value is converted to the type named.
SAME_NAME = {
    **dict.fromkeys(
        ("network_dim", "train_batch_size", "clip_skip", "seed", "keep_tokens",
         "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps", "sample_every_n_steps",
         "sample_every_n_epochs", "lr_scheduler_num_cycles", "gradient_accumulation_steps",
         "vae_batch_size", "caption_dropout_every_n_epochs", "min_timestep", "max_timestep",
         "max_data_loader_n_workers"),
        "int",
    ),
    **dict.fromkeys(
        ("network_alpha", "min_snr_gamma", "lr_scheduler_power", "prior_loss_weight",
         "caption_dropout_rate", "v_pred_like_loss", "scale_weight_norms", "network_dropout",
         "ip_noise_gamma", "huber_c", "max_grad_norm"),
        "float",
    ),
    **dict.fromkeys(
        ("cache_latents", "cache_latents_to_disk", "gradient_checkpointing", "shuffle_caption",
         "flip_aug", "color_aug", "random_crop", "enable_bucket", "bucket_no_upscale",
         "persistent_data_loader_workers", "mem_eff_attn", "full_fp16", "full_bf16", "fp8_base",
         "highvram", "weighted_captions", "scale_v_pred_loss_like_noise_pred",
         "debiased_estimation_loss", "masked_loss", "ip_noise_gamma_random_strength",
         "v_parameterization"),
        "bool",
    ),
    **dict.fromkeys(
        ("mixed_precision", "save_precision", "lr_scheduler", "sample_sampler", "loss_type",
         "huber_schedule"),
        "word",
    ),
}
# LoRA_type values that need only sd-scripts' own network modules.
LORA_TYPES = {"Standard": "networks.lora", "Kohya LoCon": "networks.lora"}
# Block-weight fields the GUI passes to networks.lora as network_args.
BLOCK_FIELDS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold",
                "block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas")
KNOWN_OPTIMIZERS = {name.lower(): name for name in (*OPTIMIZERS, "DAdaptAdamPreprint")}

_WORD = re.compile(r"^[A-Za-z0-9_.+]+$")
KEY_VALUE = re.compile(r"^[A-Za-z_]\w*=[^\s\"'=][^\s\"']*$")
NETWORK_ARG_VALUE = re.compile(r"^[\w.,+-]+$")


def is_set(value: Any) -> bool:
    """Whether a field holds something: not null, false, 0, "0" or blank."""
    if isinstance(value, str):
        value = value.strip()
        try:
            return float(value) != 0
        except ValueError:
            return value != ""
    return value not in (None, False, 0)


def number_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _to_int(value: Any) -> int:
    number = _to_float(value)
    if not number.is_integer():
        raise ValueError(value)
    return int(number)


def _to_float(value: Any) -> float:
    if isinstance(value, bool) or value is None:
        raise TypeError(value)
    if isinstance(value, str) and not value.strip():
        return 0.0
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1, "0", "1"):
        return bool(int(value))
    if isinstance(value, str) and value.strip().lower() in ("true", "false", ""):
        return value.strip().lower() == "true"
    raise ValueError(value)


def _to_word(value: Any) -> str:
    text = _to_str(value)
    if text and not _WORD.fullmatch(text):
        raise ValueError(value)
    return text


def _to_str(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(value)
    return value.strip()


CONVERTERS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "int": (_to_int, "a whole number"),
    "float": (_to_float, "a number"),
    "bool": (_to_bool, "true or false"),
    "word": (_to_word, "a single word"),
    "str": (_to_str, "text"),
}
