"""The out-of-memory ladder: one memory-saving change per retry, in the guide's order.

1. cache latents to disk (the VAE then leaves the GPU before training starts),
2. bf16 instead of fp16 where the GPU supports it (only for a run on fp16: "auto" precision
   already picks bf16 where the GPU has it, and a run set to "no" keeps what was asked for),
3. gradient checkpointing,
4. half the batch size, again on each later retry, down to 1.

A step already in effect, or one that cannot apply (latents cannot be cached with color_aug or
random_crop; bf16 needs a GPU that has it), is skipped. A smaller batch changes the steps per
epoch, so a run after step 4 cannot --resume a state saved before it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LadderStep:
    name: str  # what changed, for people: "cache latents to disk"
    args: dict[str, Any]  # the arguments with the change applied


def _cache_latents_to_disk(args: Mapping[str, Any], bf16_supported: bool) -> LadderStep | None:
    if args.get("cache_latents") and args.get("cache_latents_to_disk"):
        return None
    if args.get("color_aug") or args.get("random_crop"):
        return None  # Kohya refuses to cache latents with either
    return LadderStep("cache latents to disk",
                      {**args, "cache_latents": True, "cache_latents_to_disk": True})


def _bf16(args: Mapping[str, Any], bf16_supported: bool) -> LadderStep | None:
    precision = args.get("mixed_precision") or "no"
    if precision == "auto":
        precision = "bf16" if bf16_supported else "fp16"
    if not bf16_supported or precision != "fp16":
        return None
    changed = {**args, "mixed_precision": "bf16", "save_precision": "bf16"}
    if changed.pop("full_fp16", False):
        changed["full_bf16"] = True  # Kohya allows full_fp16 only with fp16
    return LadderStep("bf16 instead of fp16", changed)


def _gradient_checkpointing(args: Mapping[str, Any], bf16_supported: bool) -> LadderStep | None:
    if args.get("gradient_checkpointing"):
        return None
    return LadderStep("gradient checkpointing", {**args, "gradient_checkpointing": True})


def _smaller_batch(args: Mapping[str, Any], bf16_supported: bool) -> LadderStep | None:
    batch = int(args.get("train_batch_size") or 1)
    if batch <= 1:
        return None
    smaller = max(1, batch // 2)
    return LadderStep(f"batch size {batch} → {smaller}", {**args, "train_batch_size": smaller})


_STEPS: tuple[Callable[[Mapping[str, Any], bool], LadderStep | None], ...] = (
    _cache_latents_to_disk,
    _bf16,
    _gradient_checkpointing,
    _smaller_batch,
)


def next_step(args: Mapping[str, Any], bf16_supported: bool) -> LadderStep | None:
    """The first step of the ladder not yet in effect in args, or None when all are."""
    for step in _STEPS:
        found = step(args, bf16_supported)
        if found is not None:
            return found
    return None


def describe_tried(steps: Sequence[LadderStep | str]) -> str:
    """The steps taken (or their names), for a message: "cache latents to disk, gradient
    checkpointing and batch size 2 → 1"."""
    names = [step if isinstance(step, str) else step.name for step in steps]
    if not names:
        return "nothing"
    if len(names) == 1:
        return names[0]
    return f"{', '.join(names[:-1])} and {names[-1]}"
