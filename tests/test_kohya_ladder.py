"""The out-of-memory ladder: the guide's order, one step per retry, skipping what is in effect."""

from __future__ import annotations

from lorad.training.kohya.ladder import LadderStep, describe_tried, next_step
from lorad.training.kohya.presets import load_preset


def climb(args: dict, bf16_supported: bool) -> list[LadderStep]:
    steps = []
    while (step := next_step(args, bf16_supported)) is not None:
        steps.append(step)
        args = step.args
    return steps


def test_ladder_follows_the_guides_order_one_step_per_retry() -> None:
    steps = climb({"mixed_precision": "fp16", "save_precision": "fp16", "train_batch_size": 4},
                  bf16_supported=True)
    assert [s.name for s in steps] == [
        "cache latents to disk",
        "bf16 instead of fp16",
        "gradient checkpointing",
        "batch size 4 → 2",
        "batch size 2 → 1",
    ]
    assert steps[0].args["cache_latents"] and steps[0].args["cache_latents_to_disk"]
    assert (steps[1].args["mixed_precision"], steps[1].args["save_precision"]) == ("bf16", "bf16")
    assert steps[2].args["gradient_checkpointing"] is True
    assert steps[-1].args == {"mixed_precision": "bf16", "save_precision": "bf16",
                              "train_batch_size": 1, "cache_latents": True,
                              "cache_latents_to_disk": True, "gradient_checkpointing": True}


def test_each_step_keeps_the_earlier_ones_and_leaves_its_input_alone() -> None:
    args = {"mixed_precision": "fp16", "train_batch_size": 2}
    step = next_step(args, bf16_supported=True)
    assert step is not None and args == {"mixed_precision": "fp16", "train_batch_size": 2}
    later = next_step(step.args, bf16_supported=True)
    assert later is not None and later.args["cache_latents_to_disk"] is True


def test_bf16_is_skipped_where_the_gpu_lacks_it() -> None:
    names = [s.name for s in climb({"mixed_precision": "fp16", "train_batch_size": 2}, False)]
    assert names == ["cache latents to disk", "gradient checkpointing", "batch size 2 → 1"]


def test_steps_already_in_effect_are_skipped() -> None:
    args = {"cache_latents": True, "cache_latents_to_disk": True, "mixed_precision": "bf16",
            "gradient_checkpointing": True, "train_batch_size": 2}
    assert [s.name for s in climb(args, True)] == ["batch size 2 → 1"]


def test_auto_precision_counts_as_bf16_where_supported() -> None:
    sdxl = load_preset("sdxl")  # "auto", gradient checkpointing on, batch 2
    assert [s.name for s in climb(sdxl, True)] == ["cache latents to disk", "batch size 2 → 1"]
    assert [s.name for s in climb(sdxl, False)] == ["cache latents to disk", "batch size 2 → 1"]


def test_sd15_preset_on_auto_precision_never_needs_the_bf16_step() -> None:
    for bf16_supported in (True, False):
        names = [s.name for s in climb(load_preset("sd15"), bf16_supported)]
        assert names == ["cache latents to disk", "gradient checkpointing", "batch size 2 → 1"]


def test_only_a_run_on_fp16_is_moved_to_bf16() -> None:
    for precision in ("no", "bf16"):
        names = [s.name for s in climb({"mixed_precision": precision, "train_batch_size": 2}, True)]
        assert names == ["cache latents to disk", "gradient checkpointing", "batch size 2 → 1"]


def test_latents_are_not_cached_when_kohya_would_refuse() -> None:
    step = next_step({"color_aug": True, "mixed_precision": "bf16"}, True)
    assert step is not None and step.name == "gradient checkpointing"


def test_full_fp16_becomes_full_bf16_with_bf16() -> None:
    step = next_step({"cache_latents": True, "cache_latents_to_disk": True,
                      "mixed_precision": "fp16", "full_fp16": True}, True)
    assert step is not None
    assert "full_fp16" not in step.args and step.args["full_bf16"] is True


def test_exhausted_ladder_returns_none() -> None:
    args = {"cache_latents": True, "cache_latents_to_disk": True, "mixed_precision": "bf16",
            "gradient_checkpointing": True, "train_batch_size": 1}
    assert next_step(args, True) is None
    assert next_step({**args, "train_batch_size": None, "mixed_precision": "fp16"}, False) is None


def test_describe_tried_lists_steps_or_their_names() -> None:
    steps = climb({"mixed_precision": "fp16", "train_batch_size": 2}, False)
    assert describe_tried(steps) == ("cache latents to disk, gradient checkpointing and "
                                     "batch size 2 → 1")
    assert describe_tried(["cache latents to disk"]) == "cache latents to disk"
    assert describe_tried([]) == "nothing"
