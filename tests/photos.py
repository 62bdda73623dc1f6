"""Photo-like test images, generated: distinct, sharp enough, and different in perceptual hash."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter


def photo(seed: int, size: tuple[int, int] = (512, 512)) -> Image.Image:
    """A random scene: a gradient, shapes and noise, unlike any other seed's."""
    rng = random.Random(seed)
    width, height = size
    top = tuple(rng.randrange(256) for _ in range(3))
    bottom = tuple(rng.randrange(256) for _ in range(3))
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    for y in range(height):
        mix = y / max(height - 1, 1)
        draw.line([(0, y), (width, y)],
                  fill=tuple(int(a + (b - a) * mix) for a, b in zip(top, bottom, strict=True)))
    for _ in range(14):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randrange(20, width // 2), y0 + rng.randrange(20, height // 2)
        colour = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        else:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
    noise = Image.effect_noise(size, 40).convert("RGB")
    image = Image.blend(image, noise, 0.15)
    return image.filter(ImageFilter.SHARPEN)


def make_photos(folder: Path, count: int, *, size: tuple[int, int] = (512, 512), seed: int = 0,
                ext: str = "jpg") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"photo_{index + 1:03d}.{ext}"
        photo(seed * 1000 + index, size).save(path, quality=90)
        paths.append(path)
    return paths
