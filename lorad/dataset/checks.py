"""The dataset checks, in the order they run: the number of photos, blur (absolute and against
the set's median), near and mirrored duplicates (perceptual hashes), front-camera selfies.

`run_checks` runs them all: per-file findings go on the entries (`Entry.checks`, warnings), the
dataset-level ones into `Checks` (problems that refuse the set, warnings, the report's part).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from lorad.dataset.listing import Entry, shown
from lorad.settings import PrepareSettings


@dataclass(frozen=True)
class Duplicate:
    first: str
    second: str
    distance: int
    mirrored: bool


@dataclass
class Checks:
    """The dataset-level findings."""

    problems: list[str] = field(default_factory=list)  # lines that refuse the dataset
    warnings: list[str] = field(default_factory=list)  # dataset lines (no single file)
    report: dict[str, Any] = field(default_factory=dict)


def check_count(count: int, settings: PrepareSettings) -> tuple[str | None, str | None]:
    """(problem, warning) for the number of accepted images, following the guide."""
    if count == 0:
        return f"no usable photos; at least {settings.min_images} are needed: add photos", None
    if count < settings.min_images:
        return (
            f"only {count} usable image{'s' if count != 1 else ''}; at least "
            f"{settings.min_images} are needed: add more photos",
            None,
        )
    if count <= settings.few_images:
        return None, (
            f"only {count} images: training works, but variation will be low; more photos with "
            "different light, clothes, backgrounds and expressions give a better LoRA"
        )
    if count > settings.max_images:
        return None, (
            f"{count} images are more than needed (prepare.max_images is {settings.max_images}): "
            "keep the sharpest and most varied"
        )
    return None, None


def check_blur(
    sharpness: dict[str, float], settings: PrepareSettings
) -> tuple[float | None, dict[str, str]]:
    """The median sharpness and, per blurry file, the warning that says so."""
    if not sharpness:
        return None, {}
    median = statistics.median(sharpness.values())
    relative = settings.blur_relative * median
    found = {}
    for rel, value in sharpness.items():
        if value < settings.blur_threshold:
            found[rel] = (
                f"looks blurry (sharpness {value:.0f}, under {settings.blur_threshold:g}): "
                "use a sharper photo"
            )
        elif value < relative:
            found[rel] = (
                f"looks blurrier than the others (sharpness {value:.0f}, under "
                f"{settings.blur_relative:.0%} of the median {median:.0f}): use a sharper photo"
            )
    return median, found


def find_duplicates(hashes: dict[str, tuple[str, str]], max_distance: int) -> list[Duplicate]:
    """Pairs whose perceptual hashes match, directly or once one of them is mirrored.

    `hashes` maps each file to (phash, phash of its mirror image) in hex, in the dataset's order;
    the distance is the number of differing bits.
    """
    bits = {rel: (int(plain, 16), int(mirror, 16)) for rel, (plain, mirror) in hashes.items()}
    names = list(bits)
    found = []
    for index, first in enumerate(names):
        for second in names[index + 1 :]:
            distance = (bits[first][0] ^ bits[second][0]).bit_count()
            mirrored = (bits[first][0] ^ bits[second][1]).bit_count()
            if distance <= max_distance:
                found.append(Duplicate(first, second, distance, mirrored=False))
            elif mirrored <= max_distance:
                found.append(Duplicate(first, second, mirrored, mirrored=True))
    return found


def _duplicate_warning(duplicate: Duplicate) -> str:
    if duplicate.mirrored:
        return (
            f"is a mirror image of {shown(duplicate.first)}: one of the two is flipped (a "
            "front-camera selfie?); keep the one that reads the right way round"
        )
    return (
        f"looks like a near-duplicate of {shown(duplicate.first)} (hash distance "
        f"{duplicate.distance}): near-identical photos add little; keep the better one"
    )


def _front_camera_warning(lens: str) -> str:
    return (
        f"was taken with a front camera ({lens}): selfies are often saved mirrored; check that "
        "text and the hair parting read the right way round"
    )


def run_checks(accepted: list[Entry], settings: PrepareSettings) -> Checks:
    """Count, blur, duplicate and front-camera checks; per-file findings go on the entries."""
    checks = Checks()
    problem, warning = check_count(len(accepted), settings)
    checks.problems += [problem] if problem else []
    checks.warnings += [warning] if warning else []
    verdicts = {entry.rel: entry.verdict for entry in accepted if entry.verdict}
    median, blurry = check_blur(
        {rel: verdict.sharpness or 0.0 for rel, verdict in verdicts.items()}, settings
    )
    duplicates = find_duplicates(
        {rel: (verdict.phash, verdict.phash_mirror) for rel, verdict in verdicts.items()},
        settings.duplicate_distance,
    )
    for entry in accepted:
        _record_file_checks(entry, blurry.get(entry.rel), duplicates)
    checks.report = {
        "count": {
            "accepted": len(accepted),
            "min_images": settings.min_images,
            "few_images": settings.few_images,
            "max_images": settings.max_images,
            "problem": problem,
            "warning": warning,
        },
        "blur": {
            "threshold": settings.blur_threshold,
            "relative": settings.blur_relative,
            "median": median,
            "blurry": sorted(blurry),
        },
        "duplicates": [
            {"first": d.first, "second": d.second, "distance": d.distance, "mirrored": d.mirrored}
            for d in duplicates
        ],
        "possibly_mirrored": _possibly_mirrored(accepted, duplicates),
    }
    return checks


def _possibly_mirrored(accepted: list[Entry], duplicates: list[Duplicate]) -> list[dict]:
    """Front-camera shots (by their EXIF lens) and the mirrored halves of mirror-image pairs."""
    found = [
        {"source": entry.rel, "why": f"front camera: {entry.verdict.lens}"}
        for entry in accepted
        if entry.verdict and entry.verdict.lens
    ]
    found += [
        {"source": d.second, "why": f"mirror image of {d.first}"} for d in duplicates if d.mirrored
    ]
    return found


def _record_file_checks(entry: Entry, blurry: str | None, duplicates: list[Duplicate]) -> None:
    assert entry.verdict is not None
    lens = entry.verdict.lens
    mine = [d for d in duplicates if entry.rel in (d.first, d.second)]
    entry.checks = {
        "blur": blurry or "ok",
        "near_duplicate_of": [_other(d, entry.rel) for d in mine if not d.mirrored],
        "mirror_of": [_other(d, entry.rel) for d in mine if d.mirrored],
        "front_camera": lens or None,
    }
    entry.warnings += [blurry] if blurry else []
    entry.warnings += [_duplicate_warning(d) for d in mine if d.second == entry.rel]
    entry.warnings += [_front_camera_warning(lens)] if lens else []


def _other(duplicate: Duplicate, rel: str) -> str:
    return duplicate.second if duplicate.first == rel else duplicate.first


def check_mirrored_faces(accepted: list[Entry], checks: Checks,
                         mirrored: dict[str, tuple[float, float]]) -> None:
    """The guide's symmetry check by faces: each photo whose face, mirrored, is closer to the
    other photos' faces than as it is (`lorad.likeness.score.mirrored_faces`) is named."""
    for entry in accepted:
        if entry.rel not in mirrored:
            continue
        as_is, flipped = mirrored[entry.rel]
        entry.warnings.append(
            f"shows the face mirrored relative to the other photos (face distance {as_is:.2f} "
            f"to them as it is, {flipped:.2f} mirrored): a selfie? flip it so the hair parting "
            "and the face read the same way round as in the others")
        checks.report.setdefault("possibly_mirrored", []).append(
            {"source": entry.rel, "why": f"face mirrored ({as_is:.2f} as it is, {flipped:.2f} "
                                         "mirrored)"})
