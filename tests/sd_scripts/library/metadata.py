"""The `__metadata__` Kohya writes into every saved LoRA: `ss_*` training facts, `sshs_*` hashes
and the `modelspec.*` keys of the Stability AI model spec. Every value is a string."""

import argparse
import datetime
import hashlib
import json
import os

from library.dataset import Dataset

MINIMUM_KEYS = (
    "ss_v2", "ss_base_model_version", "ss_network_module", "ss_network_dim", "ss_network_alpha",
    "ss_network_args",
)
SPEC_FIELDS = (
    "author", "description", "license", "tags", "usage_hint", "thumbnail", "merged_from",
    "trigger_phrase", "preprocessor", "is_negative_embedding",
)


def base_model_version(args: argparse.Namespace, sdxl: bool) -> str:
    if sdxl:
        return "sdxl_base_v1-0"
    if not args.v2:
        return "sd_v1"
    return "sd_v2_v" if args.v_parameterization else "sd_v2"


def training_metadata(
    args: argparse.Namespace,
    sdxl: bool,
    dataset: Dataset,
    *,
    session_id: int,
    started_at: float,
    optimizer: str,
    num_batches: int,
    num_epochs: int,
    network_args: dict[str, str],
) -> dict[str, str]:
    metadata: dict[str, object] = {
        "ss_session_id": session_id,
        "ss_training_started_at": started_at,
        "ss_output_name": args.output_name,
        "ss_learning_rate": args.learning_rate,
        "ss_text_encoder_lr": args.text_encoder_lr,
        "ss_unet_lr": args.unet_lr,
        "ss_num_train_images": dataset.num_train_images,
        "ss_num_reg_images": dataset.num_reg_images,
        "ss_num_batches_per_epoch": num_batches,
        "ss_num_epochs": num_epochs,
        "ss_gradient_checkpointing": args.gradient_checkpointing,
        "ss_gradient_accumulation_steps": args.gradient_accumulation_steps,
        "ss_max_train_steps": args.max_train_steps,
        "ss_lr_warmup_steps": args.lr_warmup_steps,
        "ss_lr_scheduler": args.lr_scheduler,
        "ss_network_module": args.network_module,
        "ss_network_dim": args.network_dim,
        "ss_network_alpha": args.network_alpha,
        "ss_network_dropout": args.network_dropout,
        "ss_mixed_precision": args.mixed_precision,
        "ss_full_fp16": bool(args.full_fp16),
        "ss_v2": bool(args.v2),
        "ss_base_model_version": base_model_version(args, sdxl),
        "ss_clip_skip": args.clip_skip,
        "ss_max_token_length": args.max_token_length,
        "ss_cache_latents": bool(args.cache_latents),
        "ss_seed": args.seed,
        "ss_noise_offset": args.noise_offset,
        "ss_training_comment": args.training_comment,
        "ss_optimizer": optimizer,
        "ss_max_grad_norm": args.max_grad_norm,
        "ss_caption_dropout_rate": args.caption_dropout_rate,
        "ss_min_snr_gamma": args.min_snr_gamma,
        "ss_loss_type": args.loss_type,
        "ss_batch_size_per_device": args.train_batch_size,
        "ss_total_batch_size": args.train_batch_size * args.gradient_accumulation_steps,
        "ss_resolution": args.resolution,
        "ss_flip_aug": bool(args.flip_aug),
        "ss_shuffle_caption": bool(args.shuffle_caption),
        "ss_enable_bucket": bool(args.enable_bucket),
        "ss_keep_tokens": args.keep_tokens,
        "ss_dataset_dirs": json.dumps(dataset.dirs_info()),
        "ss_reg_dataset_dirs": json.dumps(dataset.dirs_info(reg=True)),
        "ss_tag_frequency": json.dumps(dataset.tag_frequency()),
    }
    if args.network_args:
        metadata["ss_network_args"] = json.dumps(network_args)
    model = args.pretrained_model_name_or_path
    metadata["ss_sd_model_name"] = os.path.basename(model) if os.path.exists(model) else model
    return {key: str(value) for key, value in metadata.items()}


def minimum(metadata: dict[str, str]) -> dict[str, str]:
    """What --no_metadata keeps."""
    return {key: metadata[key] for key in MINIMUM_KEYS if key in metadata}


def model_spec(args: argparse.Namespace, sdxl: bool) -> dict[str, str]:
    if args.resolution:
        sizes = [int(x) for x in args.resolution.split(",")]
        width, height = sizes[0], sizes[-1]
    else:
        width = height = 1024 if sdxl else 512
    spec = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": (
            "stable-diffusion-xl-v1-base/lora" if sdxl else "stable-diffusion-v1/lora"
        ),
        "modelspec.implementation": (
            "https://github.com/Stability-AI/generative-models" if sdxl else "diffusers"
        ),
        "modelspec.title": args.metadata_title or args.output_name or "Lora",
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.prediction_type": "epsilon",
        "modelspec.date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    for name in SPEC_FIELDS:
        value = getattr(args, f"metadata_{name}")
        if value is not None:
            spec[f"modelspec.{name}"] = value
    return spec


def hashes(data: bytes) -> dict[str, str]:
    return {
        "sshs_model_hash": hashlib.sha256(data).hexdigest(),
        "sshs_legacy_hash": hashlib.sha256(data[:0x10000]).hexdigest()[:8],
    }
