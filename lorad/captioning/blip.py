"""The captioning process: `python -m lorad.captioning.blip`, a JSON request on stdin, JSON lines
on stdout.

It loads BLIP once, captions every image of every job in the request, writes `X.txt` next to each
`X.png`, and exits, so that all of its RAM and GPU memory is released before training starts.
The daemon (`lorad.captioning.client`) starts it; nothing else in lorad imports torch or
transformers.

The request and the events are defined in `lorad.captioning.protocol`.

Stdout is kept for these events alone: file descriptor 1 is pointed at stderr before torch and
transformers are imported (they are imported lazily for that reason), so anything they print
goes to stderr.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lorad.captioning.protocol import (
    Fatal,
    Generation,
    Job,
    JobDone,
    JobError,
    Loaded,
    Progress,
    Request,
)
from lorad.captioning.text import (
    apply_prefix,
    caption_path,
    clean_caption,
    compile_phrases,
    write_caption,
)
from lorad.system.jsonchild import Emit, Protocol

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image
    from transformers import BlipForConditionalGeneration, BlipProcessor, EncoderDecoderCache

FATAL_EXIT = 2


class LoadError(Exception):
    """The model cannot be used (missing, broken, or the device is not there)."""


class ImageError(Exception):
    """An image of a job cannot be read."""


def choose_device(setting: str, cuda_count: int) -> str:
    """The torch device for caption.device, given how many CUDA devices this process sees.

    "auto" is the first visible GPU, else the CPU; "cuda" is "cuda:0"; "cuda:N" must be visible.
    """
    if setting == "cpu" or (setting == "auto" and cuda_count == 0):
        return "cpu"
    index = 0 if setting in ("auto", "cuda") else int(setting.removeprefix("cuda:"))
    if index >= cuda_count:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        seen = f"{cuda_count} CUDA device(s) visible" + (
            f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        )
        raise LoadError(f"caption.device is {setting!r}, but the captioning process has {seen}")
    return f"cuda:{index}"


def choose_dtype(setting: str, device: str, cpu_flags: set[str]) -> str:
    """The torch dtype name for caption.precision on `device`.

    "auto" is float16 on a GPU; on the CPU, bfloat16 where the processor computes it natively
    (x86 avx512_bf16 or amx_bf16, Arm bf16), several times faster there than float32 (a word
    may differ where BLIP finds two nearly equally likely); else float32.
    """
    if setting != "auto":
        return setting
    if device.startswith("cuda"):
        return "float16"
    return "bfloat16" if cpu_flags & {"avx512_bf16", "amx_bf16", "bf16"} else "float32"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The processor's feature flags (Linux; none elsewhere)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def _is_local(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or Path(name).expanduser().exists()


def _load_failure(name: str, error: Exception) -> str:
    if _is_local(name):
        hint = "check caption.model: the folder needs config.json, the weights and processor files"
    else:
        hint = (
            "check caption.model; a hub name needs this machine to reach the Hugging Face hub "
            "or to have the model in its cache"
        )
    return f"cannot load the BLIP model {name!r}: {type(error).__name__}: {error} ({hint})"


@functools.cache
def _beam_cross_cache_class() -> type:
    from transformers import DynamicCache

    class BeamCrossAttentionCache(DynamicCache):
        """The cross-attention keys and values, left in place when beam search reorders.

        Beam search reorders the whole cache after every token, moving rows only among the beams
        of one image. The cross-attention rows of those beams are the same (that image's
        embedding, repeated num_beams times), so reordering them changes nothing, yet it copies
        every image token of every beam in every layer, at every token: with BLIP-large on a
        CPU, about 40% of the decoder's time. Skipping the copy gives the very same captions.
        """

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            pass

    return BeamCrossAttentionCache


@dataclass
class Captioner:
    """A loaded BLIP and how to run it."""

    model: BlipForConditionalGeneration
    processor: BlipProcessor
    device: str
    dtype: torch.dtype
    generation: Generation

    def _cache(self) -> EncoderDecoderCache:
        from transformers import DynamicCache, EncoderDecoderCache

        config = self.model.config.text_config
        return EncoderDecoderCache(
            DynamicCache(config=config), _beam_cross_cache_class()(config=config)
        )

    def caption(self, images: list[Image]) -> list[str]:
        """BLIP's raw captions for a batch of RGB images, in order."""
        import torch

        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            ids = self.model.generate(
                pixel_values=pixels.to(self.device, self.dtype),
                cache=self._cache(),
                **self.generation.model_dump(),
            )
        return self.processor.batch_decode(ids, skip_special_tokens=True)


def load_captioner(name: str, device_setting: str, generation: Generation,
                   precision: str = "auto") -> Captioner:
    """Load BLIP once, in the precision choose_dtype picks. Raises LoadError naming the model."""
    local = _is_local(name)
    source = str(Path(name).expanduser()) if local else name
    if local and not Path(source).is_dir():
        raise LoadError(
            f"cannot load the BLIP model {name!r}: there is no such folder (check caption.model)"
        )
    import torch
    from transformers import BlipForConditionalGeneration, BlipProcessor

    cuda_count = 0 if device_setting == "cpu" else torch.cuda.device_count()
    device = choose_device(device_setting, cuda_count)
    dtype = getattr(torch, choose_dtype(precision, device, cpu_flags()))
    try:
        model = BlipForConditionalGeneration.from_pretrained(source, dtype=dtype)
        processor = BlipProcessor.from_pretrained(source)
        model = model.to(device).eval()
    except Exception as error:  # OSError, ValueError, KeyError, CUDA errors, ...
        raise LoadError(_load_failure(name, error)) from error
    return Captioner(model, processor, device, dtype, generation)


def read_image(path: Path) -> Image:
    """An image as RGB, turned upright; ImageError names the file."""
    from PIL import Image as PILImage
    from PIL import ImageOps

    try:
        with PILImage.open(path) as image:
            return ImageOps.exif_transpose(image).convert("RGB")
    except Exception as error:  # OSError, DecompressionBombError, ValueError, ...
        raise ImageError(f"{path}: cannot read the image ({error})") from error


Patterns = list[re.Pattern[str]]


def finish_caption(path: Path, raw: str, prefix: str, patterns: Patterns) -> str | None:
    """Clean BLIP's caption and write `X.txt` for image `path`; return a warning, if any."""
    cleaned = clean_caption(raw, patterns)
    write_caption(caption_path(path), apply_prefix(cleaned, prefix))
    if cleaned:
        return None
    return f"{path.name}: BLIP's caption {raw!r} was empty after clean-up; wrote the prefix alone"


def caption_job(
    captioner: Captioner, job: Job, batch_size: int, patterns: Patterns, emit: Emit
) -> list[str]:
    """Caption one job batch by batch, reporting progress; return its warnings."""
    warnings = []
    for start in range(0, len(job.images), batch_size):
        paths = job.images[start : start + batch_size]
        captions = captioner.caption([read_image(path) for path in paths])
        for path, raw in zip(paths, captions, strict=True):
            warning = finish_caption(path, raw, job.prefix, patterns)
            if warning:
                warnings.append(warning)
        Progress(job=job.job_id, done=start + len(paths), total=len(job.images)).send(emit)
    return warnings


def describe_job_error(error: Exception) -> str:
    import torch

    if isinstance(error, ImageError):
        return str(error)
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return f"out of GPU memory while captioning (lower caption.batch_size): {error}"
    return f"{type(error).__name__}: {error}"


def run(request: Request, emit: Emit) -> None:
    """Load the model and caption every job; a job's failure does not stop the others."""
    started = time.monotonic()
    patterns = compile_phrases(request.remove)
    captioner = load_captioner(request.model, request.device, request.generation,
                               request.precision)
    Loaded(
        model=request.model,
        device=captioner.device,
        dtype=str(captioner.dtype).removeprefix("torch."),
        seconds=round(time.monotonic() - started, 2),
    ).send(emit)
    for job in request.jobs:
        try:
            warnings = caption_job(captioner, job, request.batch_size, patterns, emit)
        except Exception as error:  # reported for this job; the other jobs go on
            JobError(job=job.job_id, error=describe_job_error(error)).send(emit)
        else:
            JobDone(job=job.job_id, warnings=warnings).send(emit)


def main() -> int:
    protocol = Protocol()
    emit = protocol.emit
    try:
        request = Request.read(protocol.request())
    except ValueError as error:
        Fatal(error=f"lorad.captioning.blip: unusable request on stdin ({error})").send(emit)
        return FATAL_EXIT
    try:
        run(request, emit)
    except (LoadError, ValueError) as error:  # ValueError: a caption.remove phrase
        Fatal(error=str(error)).send(emit)
        return FATAL_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
