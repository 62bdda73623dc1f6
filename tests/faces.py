"""Face pictures for the likeness tests, made from the one face photo that ships with
scikit-image (`skimage.data.astronaut()`, Eileen Collins, public domain): its crops, colour
changes and mirror, heavy distortions of it, and pictures without a face."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy
from PIL import Image, ImageEnhance, ImageFilter


def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def _swirled(image: Image.Image, strength: float) -> Image.Image:
    from skimage.transform import swirl

    pixels = swirl(numpy.asarray(image), center=(180, 260), strength=strength, radius=200)
    return Image.fromarray((pixels * 255).astype(numpy.uint8))


# Near copies: the same face, framed and lit differently.
NEAR: dict[str, Callable[[Image.Image], Image.Image]] = {
    "crop": lambda a: a.crop((60, 0, 460, 400)).resize((512, 512)),
    "closer": lambda a: a.crop((100, 20, 420, 340)).resize((512, 512)),
    "warm": lambda a: ImageEnhance.Color(a).enhance(1.6),
    "dark": lambda a: ImageEnhance.Brightness(a).enhance(0.7),
    "grey": lambda a: a.convert("L").convert("RGB"),
    "narrow": lambda a: a.resize((300, 512)).resize((512, 512)),
}
# The face pulled out of shape, more and more.
DISTORTED: dict[str, Callable[[Image.Image], Image.Image]] = {
    "swirled": lambda a: _swirled(a, 4).filter(ImageFilter.GaussianBlur(2)),
    "smeared": lambda a: _swirled(a, 3).filter(ImageFilter.GaussianBlur(3)),
}


def no_faces(folder: Path) -> list[Path]:
    """Noise, a cup of coffee and a cat."""
    from skimage import data

    pictures = {
        "noise": Image.fromarray(numpy.random.default_rng(7).integers(
            0, 256, (512, 512, 3), dtype=numpy.uint8)),
        "coffee": Image.fromarray(data.coffee()),
        "cat": Image.fromarray(data.chelsea()),
    }
    return _save(folder, pictures)


def near_copies(folder: Path, names: list[str] | None = None) -> list[Path]:
    face = astronaut()
    return _save(folder, {name: NEAR[name](face) for name in names or NEAR})


def distorted(folder: Path) -> list[Path]:
    face = astronaut()
    return _save(folder, {name: make(face) for name, make in DISTORTED.items()})


def mirrored(folder: Path) -> Path:
    return _save(folder, {"mirrored": astronaut().transpose(Image.Transpose.FLIP_LEFT_RIGHT)})[0]


def _save(folder: Path, pictures: dict[str, Image.Image]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, picture in pictures.items():
        path = folder / f"{name}.png"
        picture.save(path)
        paths.append(path)
    return paths
