"""Benchmark: lorad's dataset preparation against ImageMagick's mogrify, on the same photos.

Generates photo-like JPEGs of about --megapixels each (every fourth one with EXIF orientation 6,
as a phone held upright writes them) in a temporary folder, then times, in one run:

- lorad: prepare_dataset with every check on (decode, orientation, downscale to max_side, PNG,
  blur, perceptual hashes, duplicates, report, contact sheet), on all cores;
- mogrify: `mogrify -auto-orient -format png` over copies of the same files, one command;
- mogrify doing the same conversion work as lorad (also `-resize` to max_side and PNG compression
  level 1), split over one process per core (MAGICK_THREAD_LIMIT=1): the fairest comparison.

It prints images per second for each and the ratios (the target: lorad at least 1.5x mogrify).

    python bench/prepare.py --images 50 --megapixels 12
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import ExifTags, Image, ImageDraw

from lorad.dataset.options import PrepareOptions
from lorad.dataset.prepare import prepare_dataset
from lorad.settings import PrepareSettings


def photo(size: tuple[int, int], seed: int) -> Image.Image:
    """A photo-like picture: a smooth gradient, large and small shapes, sensor-like noise."""
    rng = random.Random(seed)
    width, height = size
    corners = Image.new("RGB", (2, 2))
    corners.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(4)])
    image = corners.resize(size, Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    for count, scale in ((10, 0.5), (400, 0.04)):
        for _ in range(count):
            x0, y0 = rng.randrange(width), rng.randrange(height)
            x1 = x0 + max(2, int(rng.uniform(0.2, 1) * scale * width))
            y1 = y0 + max(2, int(rng.uniform(0.2, 1) * scale * height))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape([x0, y0, x1, y1], fill=tuple(rng.randrange(256) for _ in range(3)))
    return Image.blend(image, Image.effect_noise(size, 30).convert("RGB"), 0.08)


def write_photo(path: Path, size: tuple[int, int], seed: int) -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "BenchCam"
    if seed % 4 == 0:
        exif[ExifTags.Base.Orientation] = 6
    photo(size, seed).save(path, quality=90, exif=exif)


def generate(folder: Path, count: int, megapixels: float) -> tuple[int, int]:
    width = int(math.sqrt(megapixels * 1e6 * 4 / 3))
    size = (width, width * 3 // 4)
    folder.mkdir(parents=True)
    with ProcessPoolExecutor() as pool:
        jobs = [
            pool.submit(write_photo, folder / f"IMG_{n:04d}.jpg", size, n) for n in range(count)
        ]
        for job in jobs:
            job.result()
    return size


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run_lorad(source: Path, dest: Path, workers: int) -> float:
    options = PrepareOptions(
        token="bench", prefix="bench, ", repeats=None, strict=False,
        settings=PrepareSettings(workers=workers),
    )
    result = None

    def prepare() -> None:
        nonlocal result
        result = prepare_dataset(source, dest, options)

    seconds = timed(prepare)
    assert result is not None and result.accepted == len(list(source.glob("*.jpg"))), result
    return seconds


def run_mogrify(mogrify: str, options: list[str], files: list[Path], processes: int) -> float:
    """mogrify over `files`, as `processes` commands side by side (one: a single command)."""
    env = {**os.environ, "MAGICK_THREAD_LIMIT": "1"} if processes > 1 else None
    chunks = [files[n::processes] for n in range(processes)]

    def convert() -> None:
        running = [
            subprocess.Popen([mogrify, *options, *map(str, chunk)], env=env) for chunk in chunks
        ]
        if any(process.wait() != 0 for process in running):
            raise SystemExit("mogrify failed")

    return timed(convert)


def copies(source: Path, folder: Path) -> list[Path]:
    shutil.copytree(source, folder)
    return sorted(folder.glob("*.jpg"))


def report(label: str, count: int, seconds: float) -> None:
    print(f"{label:<44} {count} images in {seconds:6.1f} s = {count / seconds:6.2f} images/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50, help="how many photos (default 50)")
    parser.add_argument("--megapixels", type=float, default=12.0, help="size of each (default 12)")
    parser.add_argument("--workers", type=int, default=0, help="lorad's processes (0: one a core)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    mogrify = shutil.which("mogrify")

    with tempfile.TemporaryDirectory(prefix="lorad-bench-") as temp:
        root = Path(temp)
        width, height = generate(root / "photos", args.images, args.megapixels)
        print(f"photos: {args.images} JPEGs of {width}x{height} ({width * height / 1e6:.1f} MP), "
              f"every fourth with EXIF orientation 6; {cores} cores")
        lorad = run_lorad(root / "photos", root / "dataset", args.workers)
        report("lorad prepare_dataset, all checks:", args.images, lorad)
        if mogrify is None:
            print("mogrify not found (install ImageMagick to compare): lorad's figure alone")
            return
        plain = ["-auto-orient", "-format", "png"]
        single = run_mogrify(mogrify, plain, copies(root / "photos", root / "m1"), 1)
        report(f"mogrify {' '.join(plain)}:", args.images, single)
        side = PrepareSettings().max_side
        same = [*plain, "-resize", f"{side}x{side}>", "-define", "png:compression-level=1"]
        parallel = run_mogrify(mogrify, same, copies(root / "photos", root / "mp"), cores)
        report(f"mogrify, same work as lorad, {cores} processes:", args.images, parallel)
        print(f"lorad vs mogrify: {single / lorad:.1f}x faster (target 1.5x); "
              f"{parallel / lorad:.1f}x against mogrify doing the same work on {cores} processes")

if __name__ == "__main__":
    main()
