"""What a preparation is asked: `PrepareOptions`, the subject's choices and the [prepare]
settings that `lorad.dataset.prepare.prepare_dataset` follows."""

from __future__ import annotations

from dataclasses import dataclass, field

from lorad.settings import PrepareSettings


@dataclass
class PrepareOptions:
    token: str
    prefix: str  # caption prefix, e.g. "alice, "
    repeats: int | None  # None: 400 // N, at least 1
    strict: bool  # decides alone: the caller resolves settings.strict and the subject's choice
    settings: PrepareSettings
    ignore: list[str] = field(default_factory=list)  # extra glob patterns (watch.ignore)
    faces: bool = False  # also look for mirrored faces (dlib: [score] on, lorad[faces] installed)
