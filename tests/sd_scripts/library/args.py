"""The command line of train_network.py / sdxl_train_network.py: every option, as Kohya defines it.

Names, types, defaults, nargs and choices follow Kohya's argparse definitions, so a misspelt
or unknown option fails with argparse's exit status 2, exactly like the real trainer.
"""

import argparse
import os
import tomllib
from pathlib import Path

from library.console import Console


def int_or_float(value: str) -> int | float:
    """Kohya's type for steps that may be a ratio: "10" -> 10, "0.1" -> 0.1, "5%" -> 0.05."""
    if value.endswith("%"):
        try:
            return float(value[:-1]) / 100.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"Value '{value}' is not a valid percentage") from None
    try:
        if float(value) >= 1:
            return int(value)
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not an int or float") from None


def _flags(parser: argparse.ArgumentParser, *names: str) -> None:
    for name in names:
        parser.add_argument(name, action="store_true")


def _strings(parser: argparse.ArgumentParser, *names: str) -> None:
    for name in names:
        parser.add_argument(name, type=str, default=None)


def _add_logging(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--console_log_level", type=str, default=None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
    )
    _strings(p, "--console_log_file")
    _flags(p, "--console_log_simple")


def _add_models(p: argparse.ArgumentParser) -> None:
    _flags(p, "--v2", "--v_parameterization")
    _strings(p, "--pretrained_model_name_or_path", "--tokenizer_cache_dir")
    for field in (
        "title", "author", "description", "license", "tags", "usage_hint", "thumbnail",
        "merged_from", "trigger_phrase", "preprocessor", "is_negative_embedding",
    ):
        _strings(p, f"--metadata_{field}")


def _add_dataset(p: argparse.ArgumentParser) -> None:
    _strings(p, "--train_data_dir")
    _flags(p, "--cache_info", "--shuffle_caption")
    p.add_argument("--caption_separator", type=str, default=",")
    p.add_argument("--caption_extension", type=str, default=".caption")
    _strings(p, "--caption_extention")
    p.add_argument("--keep_tokens", type=int, default=0)
    p.add_argument("--keep_tokens_separator", type=str, default="")
    _strings(p, "--secondary_separator")
    _flags(p, "--enable_wildcard")
    _strings(p, "--caption_prefix", "--caption_suffix")
    _flags(p, "--color_aug", "--flip_aug")
    _strings(p, "--face_crop_aug_range")
    _flags(p, "--random_crop", "--debug_dataset")
    _strings(p, "--resolution")
    _flags(p, "--cache_latents")
    p.add_argument("--vae_batch_size", type=int, default=1)
    _flags(p, "--cache_latents_to_disk", "--skip_cache_check", "--enable_bucket")
    p.add_argument("--min_bucket_reso", type=int, default=256)
    p.add_argument("--max_bucket_reso", type=int, default=1024)
    p.add_argument("--bucket_reso_steps", type=int, default=64)
    _flags(p, "--bucket_no_upscale")
    p.add_argument(
        "--resize_interpolation", type=str, default=None,
        choices=["lanczos", "nearest", "bilinear", "linear", "bicubic", "cubic", "area"],
    )
    p.add_argument("--token_warmup_min", type=int, default=1)
    p.add_argument("--token_warmup_step", type=float, default=0)
    _flags(p, "--alpha_mask")
    _strings(p, "--dataset_class")
    p.add_argument("--caption_dropout_rate", type=float, default=0.0)
    p.add_argument("--caption_dropout_every_n_epochs", type=int, default=0)
    p.add_argument("--caption_tag_dropout_rate", type=float, default=0.0)
    _strings(p, "--reg_data_dir", "--in_json")
    p.add_argument("--dataset_repeats", type=int, default=1)


def _add_saving(p: argparse.ArgumentParser) -> None:
    _strings(
        p, "--output_dir", "--output_name", "--huggingface_repo_id", "--huggingface_repo_type",
        "--huggingface_path_in_repo", "--huggingface_token", "--huggingface_repo_visibility",
    )
    _flags(p, "--save_state_to_huggingface", "--resume_from_huggingface", "--async_upload")
    p.add_argument(
        "--save_precision", type=str, default=None, choices=[None, "float", "fp16", "bf16"]
    )
    for name in (
        "--save_every_n_epochs", "--save_every_n_steps", "--save_n_epoch_ratio",
        "--save_last_n_epochs", "--save_last_n_epochs_state", "--save_last_n_steps",
        "--save_last_n_steps_state",
    ):
        p.add_argument(name, type=int, default=None)
    _flags(p, "--save_state", "--save_state_on_train_end")
    _strings(p, "--resume")


def _add_training(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train_batch_size", type=int, default=1)
    p.add_argument("--max_token_length", type=int, default=None, choices=[None, 150, 225])
    _flags(p, "--mem_eff_attn", "--torch_compile")
    p.add_argument(
        "--dynamo_backend", type=str, default="inductor",
        choices=[
            "eager", "aot_eager", "inductor", "aot_ts_nvfuser", "nvprims_nvfuser", "cudagraphs",
            "ofi", "fx2trt", "onnxrt", "tensort", "ipex", "tvm",
        ],
    )
    _flags(p, "--xformers", "--sdpa")
    _strings(p, "--vae")
    p.add_argument("--max_train_steps", type=int, default=1600)
    p.add_argument("--max_train_epochs", type=int, default=None)
    p.add_argument("--max_data_loader_n_workers", type=int, default=8)
    _flags(p, "--persistent_data_loader_workers")
    p.add_argument("--seed", type=int, default=None)
    _flags(p, "--gradient_checkpointing")
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--mixed_precision", type=str, default="no", choices=["no", "fp16", "bf16"])
    _flags(p, "--full_fp16", "--full_bf16", "--fp8_base")
    p.add_argument("--ddp_timeout", type=int, default=None)
    _flags(p, "--ddp_gradient_as_bucket_view", "--ddp_static_graph")
    p.add_argument("--clip_skip", type=int, default=None)
    _strings(p, "--logging_dir")
    p.add_argument("--log_with", type=str, default=None, choices=["tensorboard", "wandb", "all"])
    _strings(
        p, "--log_prefix", "--log_tracker_name", "--wandb_run_name", "--log_tracker_config",
        "--wandb_api_key",
    )
    _flags(p, "--log_config")


def _add_noise_and_loss(p: argparse.ArgumentParser) -> None:
    p.add_argument("--noise_offset", type=float, default=None)
    _flags(p, "--noise_offset_random_strength")
    p.add_argument("--multires_noise_iterations", type=int, default=None)
    p.add_argument("--ip_noise_gamma", type=float, default=None)
    _flags(p, "--ip_noise_gamma_random_strength")
    p.add_argument("--multires_noise_discount", type=float, default=0.3)
    p.add_argument("--adaptive_noise_scale", type=float, default=None)
    _flags(p, "--zero_terminal_snr")
    p.add_argument("--min_timestep", type=int, default=None)
    p.add_argument("--max_timestep", type=int, default=None)
    p.add_argument(
        "--loss_type", type=str, default="l2", choices=["l1", "l2", "huber", "smooth_l1"]
    )
    p.add_argument(
        "--huber_schedule", type=str, default="snr", choices=["constant", "exponential", "snr"]
    )
    p.add_argument("--huber_c", type=float, default=0.1)
    p.add_argument("--huber_scale", type=float, default=1.0)
    _flags(p, "--lowram", "--highvram")


def _add_sampling_and_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sample_every_n_steps", type=int, default=None)
    _flags(p, "--sample_at_first")
    p.add_argument("--sample_every_n_epochs", type=int, default=None)
    _strings(p, "--sample_prompts")
    p.add_argument(
        "--sample_sampler", type=str, default="ddim",
        choices=[
            "ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm_2", "dpm_2_a", "dpmsolver",
            "dpmsolver++", "dpmsingle", "k_lms", "k_euler", "k_euler_a", "k_dpm_2", "k_dpm_2_a",
        ],
    )
    _strings(p, "--config_file")
    _flags(p, "--output_config")
    p.add_argument("--prior_loss_weight", type=float, default=1.0)
    _strings(p, "--conditioning_data_dir")
    _flags(p, "--masked_loss")


def _add_deepspeed(p: argparse.ArgumentParser) -> None:
    _flags(p, "--deepspeed")
    p.add_argument("--zero_stage", type=int, default=2, choices=[0, 1, 2, 3])
    p.add_argument(
        "--offload_optimizer_device", type=str, default=None, choices=[None, "cpu", "nvme"]
    )
    _strings(p, "--offload_optimizer_nvme_path")
    p.add_argument("--offload_param_device", type=str, default=None, choices=[None, "cpu", "nvme"])
    _strings(p, "--offload_param_nvme_path")
    _flags(
        p, "--zero3_init_flag", "--zero3_save_16bit_model", "--fp16_master_weights_and_gradients"
    )


def _add_optimizer(p: argparse.ArgumentParser) -> None:
    p.add_argument("--optimizer_type", type=str, default="")
    _flags(p, "--use_8bit_adam", "--use_lion_optimizer")
    p.add_argument("--learning_rate", type=float, default=2e-06)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--optimizer_args", type=str, default=None, nargs="*")
    p.add_argument("--lr_scheduler_type", type=str, default="")
    p.add_argument("--lr_scheduler_args", type=str, default=None, nargs="*")
    p.add_argument("--lr_scheduler", type=str, default="constant")
    p.add_argument("--lr_warmup_steps", type=int_or_float, default=0)
    p.add_argument("--lr_decay_steps", type=int_or_float, default=0)
    p.add_argument("--lr_scheduler_num_cycles", type=int, default=1)
    p.add_argument("--lr_scheduler_power", type=float, default=1)
    _flags(p, "--fused_backward_pass")
    p.add_argument("--lr_scheduler_timescale", type=int, default=None)
    p.add_argument("--lr_scheduler_min_lr_ratio", type=float, default=None)
    p.add_argument("--dataset_config", type=Path, default=None)
    p.add_argument("--min_snr_gamma", type=float, default=None)
    _flags(p, "--scale_v_pred_loss_like_noise_pred")
    p.add_argument("--v_pred_like_loss", type=float, default=None)
    _flags(p, "--debiased_estimation_loss", "--weighted_captions")


def _add_network(p: argparse.ArgumentParser) -> None:
    _flags(p, "--cpu_offload_checkpointing", "--no_metadata")
    p.add_argument(
        "--save_model_as", type=str, default="safetensors",
        choices=[None, "ckpt", "pt", "safetensors"],
    )
    p.add_argument("--unet_lr", type=float, default=None)
    p.add_argument("--text_encoder_lr", type=float, default=None, nargs="*")
    _flags(p, "--fp8_base_unet")
    _strings(p, "--network_weights", "--network_module")
    p.add_argument("--network_dim", type=int, default=None)
    p.add_argument("--network_alpha", type=float, default=1)
    p.add_argument("--network_dropout", type=float, default=None)
    p.add_argument("--network_args", type=str, default=None, nargs="*")
    _flags(p, "--network_train_unet_only", "--network_train_text_encoder_only")
    _strings(p, "--training_comment")
    _flags(p, "--dim_from_weights")
    p.add_argument("--scale_weight_norms", type=float, default=None)
    p.add_argument("--base_weights", type=str, default=None, nargs="*")
    p.add_argument("--base_weights_multiplier", type=float, default=None, nargs="*")
    _flags(p, "--no_half_vae", "--skip_until_initial_step")
    p.add_argument("--initial_epoch", type=int, default=None)
    p.add_argument("--initial_step", type=int, default=None)
    p.add_argument("--validation_seed", type=int, default=None)
    p.add_argument("--validation_split", type=float, default=0.0)
    p.add_argument("--validate_every_n_steps", type=int, default=None)
    p.add_argument("--validate_every_n_epochs", type=int, default=None)
    p.add_argument("--max_validation_steps", type=int, default=None)


def build_parser(sdxl: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    for add in (
        _add_logging, _add_models, _add_dataset, _add_saving, _add_training, _add_noise_and_loss,
        _add_sampling_and_config, _add_deepspeed, _add_optimizer, _add_network,
    ):
        add(parser)
    if sdxl:
        _flags(
            parser, "--cache_text_encoder_outputs", "--cache_text_encoder_outputs_to_disk",
            "--disable_mmap_load_safetensors",
        )
    return parser


def apply_config_file(
    args: argparse.Namespace, parser: argparse.ArgumentParser, console: Console
) -> argparse.Namespace:
    """Kohya's --config_file: TOML tables flattened into arguments; the command line wins.

    TOML values skip argparse's type and choice checks, and unknown keys are kept silently.
    """
    if not args.config_file:
        return args
    if args.output_config:
        raise NotImplementedError("the stand-in trainer does not write --output_config files")
    path = args.config_file if args.config_file.endswith(".toml") else args.config_file + ".toml"
    if not os.path.exists(path):
        console.log("INFO", f"{path} not found.")
        raise SystemExit(1)
    console.log("INFO", f"Loading settings from {path}...")
    with open(path, "rb") as f:
        tables = tomllib.load(f)
    flat: dict[str, object] = {}
    for key, value in tables.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    args = parser.parse_args(namespace=argparse.Namespace(**flat))
    args.config_file = os.path.splitext(args.config_file)[0]
    return args
