"""The training command: which arguments a job's run gets, and the argv that runs it.

Layers, later ones winning: the family preset (sd15/sdxl data file) < the daemon's kohya_ss GUI
preset < the model's GUI preset < the subject's [train] overrides < the out-of-memory ladder's
changes < what lorad itself decides (paths, names, epochs, resume). Nothing else reaches Kohya.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorad.settings import ModelSettings, Settings
from lorad.subject import SubjectSettings
from lorad.training.kohya.args import apply_overrides, check_args, merge, to_argv
from lorad.training.kohya.buckets import BucketError, Source, fit_buckets, sources
from lorad.training.kohya.gui_preset import GuiPresetError, load_gui_preset
from lorad.training.kohya.presets import load_preset

SCRIPTS = {"sd15": "train_network.py", "sdxl": "sdxl_train_network.py"}
NEGATIVE_PROMPT = "lowres, blurry, deformed, bad anatomy, watermark, text"
MAX_SAMPLE_LINES = 100  # Kohya numbers an epoch's samples _00_ to _99_
# Arguments that may differ between the run that saved a state and the run that resumes it.
RESUME_FREE = frozenset({
    "output_dir", "output_name", "resume", "initial_epoch", "network_weights",
    "max_train_epochs",
    "max_train_steps", "train_data_dir", "pretrained_model_name_or_path", "tokenizer_cache_dir",
    "sample_prompts", "sample_every_n_steps", "sample_every_n_epochs", "sample_sampler",
    "sample_at_first", "console_log_simple", "cache_latents", "cache_latents_to_disk",
    "gradient_checkpointing", "max_data_loader_n_workers", "persistent_data_loader_workers",
    "save_every_n_epochs", "save_state", "save_state_on_train_end", "logging_dir", "vae_batch_size",
    "lowram", "highvram",
})


class CommandError(Exception):
    """The arguments cannot be built (a preset that cannot be used, an argument Kohya lacks)."""


@dataclass
class BaseArgs:
    """A job's training arguments before the run-specific ones are added."""

    family: str
    args: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def base_args(settings: Settings, subject: SubjectSettings, bf16: bool,
              gpu: bool = True) -> BaseArgs:
    """The job's arguments from its layers, with the bucket limits widened to hold the
    resolution where nobody chose them against it (each widening is a note). bf16: the GPU has
    it; gpu: a GPU is visible at all (else Kohya trains on the CPU)."""
    assert subject.model
    model: ModelSettings = settings.models[subject.model]
    layers = [(Source(0, f"lorad's {model.family} preset", chosen=False),
               load_preset(model.family))]
    notes: list[str] = []
    for source, path in (("kohya.preset", settings.kohya.preset),
                         (f"models.{subject.model}.preset", model.preset)):
        if path is None:
            continue
        try:
            gui = load_gui_preset(Path(path), model.family)
        except GuiPresetError as error:
            raise CommandError(f"{source}: {error}") from None
        layers.append((Source(len(layers), f"{source} ({path})", chosen=True, gui=True),
                       gui.args))
        notes.extend(f"{source} ({path}): {note}" for note in gui.notes)
    overrides = subject.train.set_values()
    args = apply_overrides(merge(*(layer for _, layer in layers)), overrides)
    subject_layer = (Source(len(layers), "lora.toml [train]", chosen=True), overrides)
    try:
        notes.extend(fit_buckets(args, sources([*layers, subject_layer])))
    except BucketError as error:
        raise CommandError(str(error)) from None
    args["mixed_precision"] = resolve_precision(
        args.get("mixed_precision"), settings.kohya.mixed_precision, bf16, gpu
    )
    if args.get("save_precision") in ("fp16", "bf16"):
        args["save_precision"] = "bf16" if args["mixed_precision"] == "bf16" else "fp16"
    return BaseArgs(model.family, args, notes)


def resolve_precision(preset: str | None, configured: str, bf16: bool, gpu: bool = True) -> str:
    """ "auto" (from the preset or the configuration) is bf16 where the GPU has it, else fp16;
    with no GPU at all it is "no": fp16 on the CPU crashes in Kohya (c10::Half != float)."""
    wanted = configured if configured != "auto" else (preset or "auto")
    if wanted == "auto":
        return "bf16" if bf16 else "fp16" if gpu else "no"
    return wanted


def run_args(base: dict[str, Any], *, model_path: str, train_dir: Path, output_dir: Path,
             token: str, epochs: int, prompts_file: Path, resume: Path | None = None,
             weights: Path | None = None, initial_epoch: int | None = None,
             tokenizer_cache_dir: Path | None = None, model_name: str = "",
             sample_at_first: bool = False) -> dict[str, Any]:
    """The full argument set of one run (what lorad decides wins over every preset).

    A resumed state gets --initial_epoch too: Kohya otherwise counts the epochs to skip from the
    state's step counter, which covers only the run that saved it. The LoRA's metadata names the
    token as its trigger phrase, for the UIs that show it (modelspec.trigger_phrase).
    """
    fixed: dict[str, Any] = {
        "pretrained_model_name_or_path": model_path,
        "train_data_dir": str(train_dir),
        "output_dir": str(output_dir),
        "output_name": token,
        "max_train_epochs": epochs,
        "max_train_steps": None,
        "save_every_n_epochs": 1,
        "save_state": True,
        "caption_extension": ".txt",
        "console_log_simple": True,
        "sample_prompts": str(prompts_file),
        "resume": str(resume) if resume else None,
        "initial_epoch": initial_epoch,
        "network_weights": str(weights) if weights else None,
        "tokenizer_cache_dir": str(tokenizer_cache_dir) if tokenizer_cache_dir else None,
        "log_with": None,
        "logging_dir": None,
        "metadata_title": token,
        "metadata_trigger_phrase": token,
        "metadata_description": f"LoRA of {token} on {model_name or 'its base model'}, "
                                "trained by lorad",
        "sample_at_first": True if sample_at_first else None,
    }
    return merge(base, fixed)


def check(args: dict[str, Any], family: str) -> None:
    problems = check_args(args, family)
    if problems:
        raise CommandError(f"Kohya's {SCRIPTS[family]} would refuse this command: "
                           + "; ".join(problems))


def compat_key(args: dict[str, Any]) -> str:
    """What must be equal for a saved state to be resumed (same data order, same optimizer)."""
    kept = {k: v for k, v in sorted(args.items()) if k not in RESUME_FREE and v is not None}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def argv(settings: Settings, family: str, args: dict[str, Any]) -> list[str]:
    script = str(settings.kohya.sd_scripts / SCRIPTS[family])
    python = settings.kohya.python_path()
    if not settings.kohya.accelerate:
        return [python, script, *to_argv(args)]
    return [python, "-m", "accelerate.commands.launch",
            "--num_cpu_threads_per_process", "2", "--num_processes", "1", "--num_machines", "1",
            "--mixed_precision", str(args.get("mixed_precision") or "no"),
            "--dynamo_backend", "no", script, *to_argv(args)]


def sample_size(args: dict[str, Any]) -> tuple[int, int]:
    text = str(args.get("resolution") or "512")
    parts = [int(float(p)) for p in text.replace("x", ",").split(",") if p.strip()]
    return (parts[0], parts[-1]) if parts else (512, 512)


def samples_per_prompt(prompts: list[str], wanted: int) -> int:
    """How many times each prompt is sampled: `wanted`, as long as an epoch's samples stay
    numbered in two digits (Kohya's `_NN_` in their names)."""
    return max(1, min(wanted, MAX_SAMPLE_LINES // max(len(prompts), 1)))


def prompt_file_text(prompts: list[str], args: dict[str, Any], per_prompt: int = 1) -> str:
    """Kohya's sample prompt file: one prompt a line, fixed seeds so epochs are comparable.

    With `per_prompt` > 1 the prompts are listed that many times over, each line with the next
    seed: the first round is the same as with one sample per prompt."""
    width, height = sample_size(args)
    seed = int(args.get("seed") or 1234)
    lines = [f"{prompt} --n {NEGATIVE_PROMPT} --w {width} --h {height} --d {seed + i} "
             f"--s 28 --l 7" for i, prompt in enumerate(prompts * per_prompt)]
    return "\n".join(lines) + "\n"
