"""The LoRA network as it ends up on disk: one real-looking module per trained part, small tensors.

Names and shapes follow Kohya's LoRA keys (`<module>.lora_down.weight` [dim, in],
`<module>.lora_up.weight` [out, dim], `<module>.alpha` []), so tools that look for U-Net or text
encoder keys find them; the weights are zeros.
"""

import struct

from library.safetensors_file import DTYPE_SIZES, Tensor

KNOWN_MODULES = {"networks.lora", "networks.dylora", "networks.lora_fa", "networks.oft"}
DEFAULT_DIM = 4

UNET_MODULES = {
    "sd15": [("lora_unet_down_blocks_0_attentions_0_proj_in", 320)],
    "sdxl": [("lora_unet_input_blocks_4_1_proj_in", 640)],
}
TEXT_ENCODER_MODULES = {
    "sd15": [("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 768)],
    "sdxl": [
        ("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 768),
        ("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", 1280),
    ],
}
MODULE_COUNTS = {"sd15": {"te": 72, "unet": 192}, "sdxl": {"te": 264, "unet": 722}}


def _scalar(value: float, dtype: str) -> bytes:
    if dtype == "F16":
        return struct.pack("<e", value)
    if dtype == "BF16":
        return struct.pack("<f", value)[2:]
    return struct.pack("<f", value)


def lora_tensors(
    family: str, dim: int, alpha: float, dtype: str, train_unet: bool, train_text_encoder: bool
) -> dict[str, Tensor]:
    modules = (UNET_MODULES[family] if train_unet else []) + (
        TEXT_ENCODER_MODULES[family] if train_text_encoder else []
    )
    size = DTYPE_SIZES[dtype]
    tensors = {}
    for name, features in modules:
        tensors[f"{name}.alpha"] = Tensor(dtype, [], _scalar(alpha, dtype))
        tensors[f"{name}.lora_down.weight"] = Tensor(
            dtype, [dim, features], bytes(dim * features * size)
        )
        tensors[f"{name}.lora_up.weight"] = Tensor(
            dtype, [features, dim], bytes(dim * features * size)
        )
    return tensors


def save_dtype(save_precision: str | None, full_fp16: bool, full_bf16: bool) -> str:
    """LoRA weights are float32 unless --save_precision or --full_fp16/--full_bf16 say otherwise."""
    if save_precision == "fp16" or (save_precision is None and full_fp16):
        return "F16"
    if save_precision == "bf16" or (save_precision is None and full_bf16):
        return "BF16"
    return "F32"
