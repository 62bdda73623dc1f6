"""Captioning throughput: lorad's batched BLIP path next to a one-image-at-a-time pipeline.

The model has the sizes of Salesforce/blip-image-captioning-large (vision ViT-L/16 at 384 px,
BERT-base text decoder, 30524-token vocabulary) with random weights, so nothing is downloaded.
Random weights never stop early: with min_length 15 every caption runs to max_length, on both
sides alike. Both sides read the same PNGs from disk with the same generation settings:

* lorad: `lorad.captioning.blip.caption_job`, the child process's own code (read, batch,
  generate, clean, write X.txt), batches of --batch-size;
* pipeline: `transformers.pipeline("image-text-to-text", ...)` called once per image. transformers 5
  renamed the "image-to-text" task to this one; it needs `processor=` (an image processor and a
  tokenizer alone no longer do) and a text, where "" gives BLIP's unconditional caption.

Usage: python bench/caption.py [--images 64] [--batch-size 4] [--quick] [--device auto]
Where caption.precision "auto" picks another precision than float32 (float16 on a GPU, bfloat16
on a CPU that computes it natively), lorad's path is also timed in it: what the daemon runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import BlipForConditionalGeneration, BlipProcessor, Pipeline, pipeline

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from blipfixture import (  # noqa: E402
    LARGE_TEXT,
    LARGE_VISION,
    LARGE_VOCAB_SIZE,
    TINY_TEXT,
    TINY_VISION,
    build_blip,
)

from lorad.captioning import blip  # noqa: E402
from lorad.captioning.client import CaptionJob, build_request  # noqa: E402
from lorad.captioning.protocol import Generation  # noqa: E402
from lorad.captioning.text import clean_caption, compile_phrases  # noqa: E402
from lorad.settings import CaptionSettings  # noqa: E402


@dataclass
class Side:
    """One side of the comparison: its captions and the seconds it spent."""

    label: str
    captions: dict[Path, str] = field(default_factory=dict)
    seconds: float = 0.0

    def timed(self, work: Callable[[], dict[Path, str]]) -> None:
        started = time.perf_counter()
        self.captions.update(work())
        self.seconds += time.perf_counter() - started

    @property
    def per_second(self) -> float:
        return len(self.captions) / self.seconds

    def report(self) -> str:
        return (
            f"  {self.label}: {self.per_second:.3f} images/s "
            f"({len(self.captions)} images in {self.seconds:.1f} s)"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-beams", type=int, default=9)
    parser.add_argument("--min-length", type=int, default=15)
    parser.add_argument("--max-length", type=int, default=75)
    parser.add_argument("--no-repeat-ngram-size", type=int, default=3)
    parser.add_argument("--size", type=int, default=512, help="side of the generated images")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: a tiny BLIP and 8 images (unless --images)"
    )
    args = parser.parse_args()
    if args.quick and "--images" not in sys.argv:
        args.images = 8
    return args


def make_images(folder: Path, count: int, size: int) -> list[Path]:
    """Smooth random colour fields (photo-like PNGs, not noise)."""
    paths = []
    for index in range(count):
        rng = np.random.default_rng(index)
        small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
        path = folder / f"{index:03d}.png"
        image.save(path)
        paths.append(path)
    return paths


def build_model(folder: Path, quick: bool) -> tuple[BlipForConditionalGeneration, BlipProcessor]:
    if quick:
        return build_blip(folder, TINY_VISION, TINY_TEXT)
    return build_blip(folder, LARGE_VISION, LARGE_TEXT, LARGE_VOCAB_SIZE)


def run_lorad(
    captioner: blip.Captioner, settings: CaptionSettings, images: list[Path]
) -> dict[Path, str]:
    """lorad's child code path over `images`; the caption file of each image."""
    request = build_request([CaptionJob(1, "", images)], settings)
    patterns = compile_phrases(settings.remove)
    job = request.jobs[0]
    blip.caption_job(captioner, job, settings.batch_size, patterns, lambda *_, **__: None)
    return {path: path.with_suffix(".txt").read_text(encoding="utf-8").strip() for path in images}


def run_pipeline(
    pipe: Pipeline, generation: Generation, images: list[Path]
) -> dict[Path, str]:
    """One pipeline call per image; BLIP's caption of each, through lorad's clean-up (with no
    phrases to remove) so that it compares with lorad's caption files."""
    captions = {}
    for path in images:
        result = pipe(images=str(path), text="", generate_kwargs=generation.model_dump())
        captions[path] = clean_caption(result[0]["generated_text"], [])
    return captions


def main() -> None:
    args = parse_args()
    device = "cuda:0" if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and device == "cpu":
        sys.exit("--device cuda: CUDA is not available")
    settings = CaptionSettings(
        batch_size=args.batch_size,
        num_beams=args.num_beams,
        min_length=args.min_length,
        max_length=args.max_length,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        remove=[],  # compare BLIP's words on both sides
    )
    generation = build_request([], settings).generation
    with tempfile.TemporaryDirectory(prefix="lorad-bench-") as temp:
        folder = Path(temp)
        started = time.perf_counter()
        model, processor = build_model(folder / "model", args.quick)
        model = model.to(device)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(
            f"BLIP {'tiny' if args.quick else 'large-sized'} ({params:.1f}M parameters, random "
            f"weights) built in {time.perf_counter() - started:.1f} s; device {device}, "
            f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}",
            flush=True,
        )
        images = make_images(folder, args.images + 1, args.size)
        warmup, images = images[:1], images[1:]
        print(
            f"{len(images)} images of {args.size}x{args.size}; num_beams {args.num_beams}, "
            f"min_length {args.min_length}, max_length {args.max_length}, "
            f"no_repeat_ngram_size {args.no_repeat_ngram_size}; one warm-up image each side",
            flush=True,
        )

        captioner = blip.Captioner(model, processor, device, torch.float32, generation)
        pipe = pipeline("image-text-to-text", model=model, processor=processor, device=device)
        run_lorad(captioner, settings, warmup)
        run_pipeline(pipe, generation, warmup)

        # Chunk by chunk, each side in turn: a machine that gets busier or quieter during the
        # run slows both sides alike.
        lorad_side = Side(f"lorad, batches of {args.batch_size}, float32")
        pipe_side = Side("pipeline, one image at a time, float32")
        for start in range(0, len(images), args.batch_size):
            chunk = images[start : start + args.batch_size]
            lorad_side.timed(partial(run_lorad, captioner, settings, chunk))
            pipe_side.timed(partial(run_pipeline, pipe, generation, chunk))
            print(f"  {start + len(chunk)}/{len(images)} images", flush=True)
        same = sum(lorad_side.captions[p] == pipe_side.captions[p] for p in images)
        print(lorad_side.report())
        print(pipe_side.report())
        print(f"  same caption on both sides: {same}/{len(images)}")
        print(f"  speed-up: {lorad_side.per_second / pipe_side.per_second:.2f}x", flush=True)

        # What the daemon really runs with caption.precision = "auto": float16 on a GPU,
        # bfloat16 on a CPU that computes it natively.
        chosen = blip.choose_dtype("auto", device, blip.cpu_flags())
        if chosen != "float32":
            dtype = getattr(torch, chosen)
            half = blip.Captioner(model.to(dtype), processor, device, dtype, generation)
            run_lorad(half, settings, warmup)
            half_side = Side(f"lorad, batches of {args.batch_size}, {chosen} (its auto precision)")
            half_side.timed(partial(run_lorad, half, settings, images))
            alike = sum(half_side.captions[p] == lorad_side.captions[p] for p in images)
            print(half_side.report())
            print(f"  same caption as float32: {alike}/{len(images)}")
            print(f"  speed-up over the float32 pipeline: "
                  f"{half_side.per_second / pipe_side.per_second:.2f}x", flush=True)


if __name__ == "__main__":
    main()
