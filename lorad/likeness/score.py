"""How much each epoch's samples look like the person in the training photos, and which epoch to
suggest: pure rules on face descriptors (dlib's 128 numbers, from `lorad.likeness.child`).

- An epoch's **likeness** is the median, over its samples that show a face, of the mean
  distance from that face to the training photos' faces: lower is more alike (dlib calls two
  faces under 0.6 apart usually the same person).
- Its **faces** are how many of its samples show a face at all.
- Its **spread** is the mean distance between its samples' faces: near 0, the samples have
  collapsed onto one picture (the guide's "all the same").
- The **suggestion** is the most recent epoch whose likeness is within `score.tolerance` of the
  best, whose samples still show a face (`score.min_faces`) and still differ (`score.min_spread`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from pydantic import BaseModel

from lorad.settings import ScoreSettings

Vector = Sequence[float]
MATCH = 0.6  # dlib's threshold: two faces closer than this are usually one person
MIRROR_MARGIN = 0.03  # a face this much closer to the others once mirrored was likely mirrored
MIRROR_MIN_FACES = 3


class Likeness(BaseModel):
    """One epoch's score (the manifest's `EpochEntry.likeness`)."""

    samples: int
    faces: int  # samples in which a face was found
    score: float | None = None  # lower is more alike; None: no face in any sample
    spread: float | None = None  # None: fewer than two faces
    same: bool = False  # the samples have collapsed onto one picture

    def label(self) -> str:
        """"likeness 0.38, faces 4/4" (the contact sheet's row, `lorad show`)."""
        faces = f"faces {self.faces}/{self.samples}"
        if self.score is None:
            return f"no face ({faces})"
        return f"likeness {self.score:.2f}, {faces}" + (", all the same" if self.same else "")


class Suggestion(BaseModel):
    """The epoch that looks most like the person, and why (the manifest's `suggestion`)."""

    epoch: int | None = None  # None: no epoch to suggest (the reason says why)
    reason: str
    scored: bool = True  # False: nothing was scored (the training photos hold no single face)


def distance(first: Vector, second: Vector) -> float:
    return math.dist(first, second)


def mean_distance(face: Vector, others: Sequence[Vector]) -> float:
    return statistics.fmean(distance(face, other) for other in others)


def spread(faces: Sequence[Vector]) -> float | None:
    """The mean distance between every two of `faces` (None for fewer than two)."""
    pairs = [distance(a, b) for i, a in enumerate(faces) for b in faces[i + 1:]]
    return statistics.fmean(pairs) if pairs else None


def reference_problem(faces_per_photo: Sequence[int]) -> str | None:
    """Why the training photos cannot be scored against (None when they can): at least half of
    them must show exactly one face."""
    single = sum(1 for count in faces_per_photo if count == 1)
    total = len(faces_per_photo)
    if total and single and single * 2 >= total:
        return None
    return (f"the training photos hold no single face ({single} of {total} show exactly one): "
            "likeness is not scored for this subject (an object or a style?)")


def score_epoch(references: Sequence[Vector], samples: Sequence[Vector | None],
                settings: ScoreSettings) -> Likeness:
    """One epoch's likeness from its samples' faces (None: no face in that sample)."""
    faces = [face for face in samples if face is not None]
    if not faces or not references:
        return Likeness(samples=len(samples), faces=len(faces))
    among = spread(faces)
    return Likeness(
        samples=len(samples), faces=len(faces),
        score=round(statistics.median(mean_distance(face, references) for face in faces), 4),
        spread=None if among is None else round(among, 4),
        same=among is not None and among < settings.min_spread)


def usable(likeness: Likeness, settings: ScoreSettings) -> bool:
    """An epoch that may be suggested: a score, enough faces, samples that still differ."""
    return (likeness.score is not None and not likeness.same
            and likeness.faces >= settings.min_faces * likeness.samples)


def suggest(epochs: dict[int, Likeness], settings: ScoreSettings) -> Suggestion:
    """The most recent epoch whose likeness is close to the best, with its reason."""
    fit = {n: s.score for n, s in epochs.items() if usable(s, settings) and s.score is not None}
    if not fit:
        if not any(s.faces for s in epochs.values()):
            return Suggestion(reason="no epoch's samples show a face yet")
        return Suggestion(reason="no epoch's samples show the face often enough and varied "
                                 f"enough to judge ({_list(epochs, sorted(epochs))})")
    best = min(fit.values())
    if best > MATCH:
        top = min(fit, key=lambda n: fit[n])
        return Suggestion(reason=f"no epoch looks like the person yet (the closest is epoch "
                                 f"{top} at {best:.2f}; under {MATCH} is usually the same "
                                 "person): it may be undertrained")
    epoch = max(n for n, score in fit.items() if score <= best + settings.tolerance)
    later = sorted(n for n in epochs if n > epoch)
    if not later:
        return Suggestion(epoch=epoch, reason=f"epoch {epoch} looks most like the person "
                                              f"({fit[epoch]:.2f}), and it is the newest")
    span = f"epoch {later[0]} drifts" if len(later) == 1 else \
        f"epochs {later[0]}–{later[-1]} drift"
    return Suggestion(epoch=epoch, reason=f"epoch {epoch} looks most like the person "
                                          f"({fit[epoch]:.2f}; {span}: {_list(epochs, later)})")


def _list(epochs: dict[int, Likeness], numbers: list[int]) -> str:
    """"0.44, 0.51, no face" for these epochs."""
    parts = []
    for number in numbers:
        likeness = epochs[number]
        if likeness.score is None:
            parts.append(f"no face {likeness.faces}/{likeness.samples}")
        elif likeness.same:
            parts.append(f"{likeness.score:.2f} all the same")
        elif likeness.faces < likeness.samples:
            parts.append(f"{likeness.score:.2f} faces {likeness.faces}/{likeness.samples}")
        else:
            parts.append(f"{likeness.score:.2f}")
    return ", ".join(parts)


def mirrored_faces(faces: dict[str, tuple[Vector, Vector]]) -> dict[str, tuple[float, float]]:
    """The photos whose face, mirrored, is closer to the other photos' faces than as it is (a
    selfie saved mirrored), with both mean distances. `faces` maps each photo to its face's
    descriptor and its mirror's; a set of fewer than MIRROR_MIN_FACES faces is not judged."""
    if len(faces) < MIRROR_MIN_FACES:
        return {}
    found = {}
    for name, (plain, mirror) in faces.items():
        others = [vector for other, (vector, _) in faces.items() if other != name]
        as_is, flipped = mean_distance(plain, others), mean_distance(mirror, others)
        if flipped < as_is - MIRROR_MARGIN:
            found[name] = (round(as_is, 3), round(flipped, 3))
    return found
