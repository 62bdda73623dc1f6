"""The face child's protocol (`python -m lorad.likeness.child`), defined once for both sides: the
daemon (`lorad.likeness.client`) and the prepare child send one `Request` on the child's stdin;
the child answers with one event a line on stdout.

Request (one JSON object)::

    {"images": [{"path": "/abs/alice_001.png", "mirror": true}, {"path": "/abs/s.png"}, ...]}

Events::

    {"event": "loaded", "seconds": 0.9}
    {"event": "face", "path": "/abs/s.png", "faces": 1, "descriptor": [128 floats],
     "mirrored": [128 floats] or null}                            one per image, in order
    {"event": "fatal", "error": "..."}                            then exit status 2

`faces` is how many faces dlib's detector found; the descriptor is the largest one's (None when
there is none, or the image cannot be read: `error` says why). `mirrored` is that face's
descriptor once mirrored, when the request asked for it. Only pydantic is imported here: the
daemon never loads dlib.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

from lorad.system.jsonchild import Event, Message, read_event

# The two model files lorad uses from the face_recognition_models package (public domain); the
# package's 68-point predictor, trained on non-commercial data, is never loaded.
LANDMARKS = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR = "dlib_face_recognition_resnet_model_v1.dat"
MODELS_PACKAGE = "face_recognition_models"


def faces_installed() -> bool:
    """Whether `lorad[faces]` is installed (dlib and the model files), without importing them."""
    return (importlib.util.find_spec("dlib") is not None
            and models_folder() is not None)


def models_folder() -> Path | None:
    """The folder holding the model files (the package is located, never imported: its
    __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if (folder / LANDMARKS).is_file() and (folder / DESCRIPTOR).is_file() else None


class Image(Message):
    path: Path  # absolute
    mirror: bool = False  # also describe the face mirrored (the dataset's symmetry check)


class Request(Message):
    images: list[Image]


class Loaded(Event):
    event: Literal["loaded"] = "loaded"
    seconds: float = 0.0


class Face(Event):
    event: Literal["face"] = "face"
    path: Path
    faces: int = 0
    descriptor: list[float] | None = None
    mirrored: list[float] | None = None
    error: str | None = None


class Fatal(Event):
    event: Literal["fatal"] = "fatal"
    error: str


EVENTS: dict[str, type[Event]] = {"loaded": Loaded, "face": Face, "fatal": Fatal}


def parse_event(data: dict[str, Any]) -> Event | None:
    """The event a line of the child holds; None for a kind this side does not know."""
    return read_event(EVENTS, data)
