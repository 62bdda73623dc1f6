"""The argument checks Kohya makes before training, with its messages and exception types.

Kohya checks with `assert`; these raise AssertionError explicitly so `python -O` changes nothing.
"""

import argparse
import os

from library.console import Console
from library.network import KNOWN_MODULES

UNSUPPORTED = {
    "dataset_config": "--dataset_config",
    "in_json": "--in_json",
    "dataset_class": "--dataset_class",
    "debug_dataset": "--debug_dataset",
    "skip_until_initial_step": "--skip_until_initial_step",
}


def prepare(args: argparse.Namespace) -> None:
    """Normalise arguments as Kohya does, and refuse what the stand-in does not simulate."""
    for dest, option in UNSUPPORTED.items():
        if getattr(args, dest):
            raise NotImplementedError(f"the stand-in trainer does not simulate {option}")
    if args.caption_extention is not None:
        args.caption_extension = args.caption_extention
        args.caption_extention = None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def verify_dataset_options(args: argparse.Namespace, sdxl: bool) -> None:
    if args.cache_latents:
        _require(
            not (args.color_aug or args.random_crop),
            "when caching latents, either color_aug or random_crop cannot be used"
            " / latentをキャッシュするときはcolor_augとrandom_cropは使えません",
        )
    if sdxl:
        _require(
            not args.v2,
            "v2 cannot be enabled in SDXL training / SDXL学習ではv2を有効にすることはできません",
        )
        if args.cache_text_encoder_outputs:
            _require(
                not (
                    args.shuffle_caption or args.caption_dropout_rate > 0
                    or args.caption_tag_dropout_rate > 0 or args.token_warmup_step > 0
                ),
                "when caching Text Encoder output, either caption_dropout_rate, shuffle_caption,"
                " token_warmup_step or caption_tag_dropout_rate cannot be used"
                " / Text Encoderの出力をキャッシュするときはcaption_dropout_rate, shuffle_caption,"
                " token_warmup_step, caption_tag_dropout_rateは使えません",
            )
        _require(
            args.network_train_unet_only or not args.cache_text_encoder_outputs,
            "network for Text Encoder cannot be trained with caching Text Encoder outputs"
            " / Text Encoderの出力をキャッシュしながら"
            "Text Encoderのネットワークを学習することはできません",
        )
    steps = 32 if sdxl else 64
    _require(
        not args.enable_bucket or args.bucket_reso_steps % steps == 0,
        f"bucket_reso_steps is {args.bucket_reso_steps}. it must be divisible by {steps}.\n"
        f"bucket_reso_stepsが{args.bucket_reso_steps}です。{steps}で割り切れる必要があります",
    )


def verify_model_path(path: str | None) -> None:
    if path is None or not os.path.exists(path):
        raise ValueError(
            f'The provided pretrained_model_name_or_path "{path}" is neither a valid local path'
            " nor a valid repo id."
        )


def verify_network_module(name: str | None) -> None:
    """What importlib.import_module(args.network_module) would raise in Kohya's environment."""
    if name is None:
        raise AttributeError("'NoneType' object has no attribute 'startswith'")
    if name not in KNOWN_MODULES:
        package = name.split(".")[0]
        raise ModuleNotFoundError(f"No module named '{name if package == 'networks' else package}'")


def verify_precision(args: argparse.Namespace) -> None:
    if args.full_fp16:
        _require(
            args.mixed_precision == "fp16",
            "full_fp16 requires mixed precision='fp16'"
            " / full_fp16を使う場合はmixed_precision='fp16'を指定してください。",
        )
    elif args.full_bf16:
        _require(
            args.mixed_precision == "bf16",
            "full_bf16 requires mixed precision='bf16'"
            " / full_bf16を使う場合はmixed_precision='bf16'を指定してください。",
        )


def adjust_min_max_bucket_reso_by_steps(args: argparse.Namespace, console: Console) -> None:
    """Kohya's check of the bucket limits against the resolution, made as its datasets are built
    (so before "No data found"): min rounded down and max up to bucket_reso_steps, then asserted.
    """
    if not args.enable_bucket or args.resolution is None:
        return
    sides = tuple(int(side) for side in args.resolution.split(","))
    resolution = sides * 2 if len(sides) == 1 else sides
    _require(len(resolution) == 2, "resolution must be 'size' or 'width,height' / resolution"
             f"（解像度）は'サイズ'または'幅','高さ'で指定してください: {resolution}")
    steps, low, high = args.bucket_reso_steps, args.min_bucket_reso, args.max_bucket_reso
    if low % steps != 0:
        adjusted = low - low % steps
        console.log("WARNING", "min_bucket_reso is adjusted to be multiple of bucket_reso_steps"
                    " / min_bucket_resoがbucket_reso_stepsの倍数になるように調整されました:"
                    f" {low} -> {adjusted}")
        low = adjusted
    if high % steps != 0:
        adjusted = high + steps - high % steps
        console.log("WARNING", "max_bucket_reso is adjusted to be multiple of bucket_reso_steps"
                    " / max_bucket_resoがbucket_reso_stepsの倍数になるように調整されました:"
                    f" {high} -> {adjusted}")
        high = adjusted
    _require(min(resolution) >= low,
             "min_bucket_reso must be equal or less than resolution"
             " / min_bucket_resoは最小解像度より大きくできません。"
             "解像度を大きくするかmin_bucket_resoを小さくしてください")
    _require(max(resolution) <= high,
             "max_bucket_reso must be equal or greater than resolution"
             " / max_bucket_resoは最大解像度より小さくできません。"
             "解像度を小さくするかmin_bucket_resoを大きくしてください")
