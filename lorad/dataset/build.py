"""Dataset preparation: a subject folder of photos in; Kohya's training folder, a report and a
contact sheet out.

`prepare_dataset` lists the folder (junk, hidden and lorad's own files skipped; links never
followed out of it), converts every image in a process pool
(`lorad.dataset.image.process_image`), runs the dataset checks (count, blur, near and mirrored
duplicates, front-camera selfies) and lays out what Kohya reads:

    <dest>/training_images/<repeats>_<token>/<token>_001.png   (+ <token>_001.txt: user caption)
    <dest>/report.json    every file's verdict, the checks, the summary
    <dest>/dataset.png    the contact sheet
    <dest>/manifest.json  for the later stages (only when the dataset is usable)

The subject folder is only read. Outputs are built in <dest>/.prepare-staging and moved into
place; running again on the same dest rebuilds them.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import statistics
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from lorad.captioning.text import apply_prefix, write_caption
from lorad.dataset.image import FORMAT_NAMES, IMAGE_EXTENSIONS, ImageVerdict, process_image
from lorad.dataset.sheets import dataset_sheet
from lorad.inbox.junk import is_junk, is_junk_dir
from lorad.settings import PrepareSettings
from lorad.subject import SUBJECT_FILE

TRAIN_ROOT = "training_images"
REPORT = "report.json"
SHEET = "dataset.png"
MANIFEST = "manifest.json"
ZIP = "dataset.zip"  # written by write_zip on request; a stale one is removed
STAGING = ".prepare-staging"
# lorad's own files in a subject folder: never photos, never reported.
CONTROL_FILES = frozenset({SUBJECT_FILE, ".lorad-ready", "error.txt"})
CAPTION_EXTENSION = ".txt"
REPEAT_BUDGET = 400  # the guide: repeats = 400 / number of images
CRASHED = (
    "crashed the image decoder (the worker process died while reading it): re-save it as JPEG "
    "or PNG"
)

SKIPPED_FOLDER = "is a hidden, system or ignored folder: not read"
SKIPPED_FILE = "is a hidden, system or partial file, or matches an ignore pattern"
NOT_REGULAR = "is not a regular file (a pipe, socket or device): copy the photo itself in"
NOT_AN_IMAGE = "is not an image or a caption"

Progress = Callable[[int, int], None]
Convert = Callable[[Path, Path, PrepareSettings, Path | None], ImageVerdict]


@dataclass
class PrepareOptions:
    token: str
    prefix: str  # caption prefix, e.g. "alice, "
    repeats: int | None  # None: 400 // N, at least 1
    strict: bool  # decides alone: the caller resolves settings.strict and the subject's choice
    settings: PrepareSettings
    ignore: list[str] = field(default_factory=list)  # extra glob patterns (watch.ignore)


@dataclass
class PrepareResult:
    usable: bool
    message: str  # one sentence: why refused, or "N images ready (M refused, K warnings)"
    accepted: int
    refused: int
    warnings: list[str]  # human lines, each naming its file
    problems: list[str]  # refused files and dataset-level refusals, each naming its file
    repeats: int
    train_dir: Path  # dest/training_images/<repeats>_<token>
    report_path: Path
    sheet_path: Path


@dataclass
class Entry:
    """One listed file and what became of it.

    `status` is "image" or "caption" while listed, then "accepted", "refused", "ignored" or
    "caption" (a caption that was used). Reasons and warnings follow the file's name.
    """

    rel: str  # relative path inside the subject folder, with "/"
    path: Path  # what is read: the file, or the target of a link that stays inside the folder
    status: str
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    verdict: ImageVerdict | None = None
    caption: str | None = None
    caption_file: str | None = None
    converted: Path | None = None
    thumbnail: Path | None = None
    output: str | None = None
    checks: dict[str, Any] = field(default_factory=dict)


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


def shown(rel: str) -> str:
    """A relative path fit for a message line: quoted when it holds control or odd characters."""
    return rel if rel.isprintable() else repr(rel)


# Listing --------------------------------------------------------------------------------------


def list_source(source: Path, ignore: Iterable[str] = ()) -> list[Entry]:
    """Every file under `source` that matters, classified, sorted by relative path."""
    entries = _scan(source, source, source.resolve(), tuple(ignore))
    return sorted(entries, key=lambda entry: entry.rel)


def _scan(folder: Path, source: Path, root: Path, ignore: tuple[str, ...]) -> Iterator[Entry]:
    try:
        with os.scandir(folder) as listing:
            items = list(listing)
    except OSError as error:
        if folder == source:
            raise
        rel = folder.relative_to(source).as_posix() + "/"
        yield Entry(rel, folder, "refused", f"is a folder that cannot be read ({error.strerror})")
        return
    for item in items:
        path = Path(item.path)
        rel = path.relative_to(source).as_posix()
        if not item.is_dir(follow_symlinks=False):
            entry = _classify(item, path, rel, root, ignore)
            if entry is not None:
                yield entry
        elif item.name.startswith(".") or is_junk_dir(item.name) or is_junk(item.name, ignore):
            yield Entry(rel + "/", path, "ignored", SKIPPED_FOLDER)
        else:
            yield from _scan(path, source, root, ignore)


def _classify(
    item: os.DirEntry, path: Path, rel: str, root: Path, ignore: tuple[str, ...]
) -> Entry | None:
    name = item.name
    if name.lower() in CONTROL_FILES:
        return None
    if name.startswith(".") or is_junk(name, ignore):
        return Entry(rel, path, "ignored", SKIPPED_FILE)
    kind = _kind(name)
    if item.is_symlink():
        try:
            path = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return Entry(rel, path, "refused", "is a broken link: copy the photo itself in")
        if not path.is_relative_to(root):
            return Entry(
                rel, path, "refused",
                "is a link to a place outside the subject folder, which lorad does not follow: "
                "copy the file itself in",
            )
        if path.is_dir():
            return Entry(rel, path, "ignored", "is a link to a folder inside the subject folder")
    if not path.is_file():
        status = "ignored" if kind == "other" else "refused"
        return Entry(rel, path, status, NOT_REGULAR)
    if kind == "other":
        return Entry(rel, path, "ignored", NOT_AN_IMAGE)
    return Entry(rel, path, kind)


def _kind(name: str) -> str:
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    return "caption" if suffix == CAPTION_EXTENSION else "other"


# Captions -------------------------------------------------------------------------------------


def _stem_key(rel: str) -> tuple[str, str]:
    path = PurePosixPath(rel)
    return str(path.parent), path.stem


def _pair_captions(entries: list[Entry]) -> dict[str, Entry]:
    """Each image's caption file (same folder and stem), by image; leftover captions are ignored."""
    captions: dict[tuple[str, str], Entry] = {}
    for entry in entries:
        if entry.status == "caption":
            captions.setdefault(_stem_key(entry.rel), entry)
    pairs: dict[str, Entry] = {}
    for entry in entries:
        caption = captions.get(_stem_key(entry.rel)) if entry.status == "image" else None
        if caption is not None:
            pairs[entry.rel] = caption
            entry.caption_file = caption.rel
            caption.reason = f"is the caption of {shown(entry.rel)}"
    used = {caption.rel for caption in pairs.values()}
    for entry in entries:
        if entry.status == "caption" and entry.rel not in used:
            entry.status = "ignored"
            entry.reason = (
                "is a .txt file with no photo of the same name"
                if captions[_stem_key(entry.rel)] is entry
                else "is a second caption file for the same photo"
            )
    return pairs


def _read_caption(caption: Entry) -> tuple[str | None, str | None]:
    """The caption text as one line, or None and the warning that says why it is not used."""
    name = shown(caption.rel)
    try:
        text = caption.path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        return None, f"has a caption file {name} that is not UTF-8: ignored (save it as UTF-8)"
    except OSError as error:
        return None, f"has a caption file {name} that cannot be read ({error.strerror})"
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    if not line:
        return None, f"has an empty caption file {name}: it is ignored"
    return line, None


def _attach_captions(accepted: list[Entry], pairs: dict[str, Entry], prefix: str) -> None:
    for entry in accepted:
        if entry.rel not in pairs:
            continue
        text, warning = _read_caption(pairs[entry.rel])
        if text is None:
            entry.warnings.append(warning or "")
        else:
            entry.caption = apply_prefix(text, prefix)


# Conversion -----------------------------------------------------------------------------------


def _worker_count(settings: PrepareSettings, jobs: int) -> int:
    return max(1, min(settings.workers or os.cpu_count() or 1, jobs))


def _convert_all(
    images: list[Entry],
    settings: PrepareSettings,
    tick: Callable[[], None],
    convert: Convert = process_image,
) -> None:
    """Convert every image in a process pool, setting each entry's verdict.

    A worker that dies (a decoder crash) breaks the whole pool: the images left unfinished are
    then run one per pool, so that only the one that crashes is refused.
    """
    workers = _worker_count(settings, len(images))
    with _pool(workers) as pool:
        futures = {
            pool.submit(convert, entry.path, entry.converted, settings, entry.thumbnail): entry
            for entry in images
        }
        for future in as_completed(futures):
            try:
                futures[future].verdict = future.result()
            except BrokenProcessPool:
                continue
            tick()
    for entry in images:
        if entry.verdict is None:
            entry.verdict = _convert_alone(entry, settings, convert)
            tick()


def _convert_alone(entry: Entry, settings: PrepareSettings, convert: Convert) -> ImageVerdict:
    with _pool(1) as pool:
        try:
            pool.submit(os.getpid).result()
        except BrokenProcessPool:
            raise RuntimeError(
                "the image conversion processes die as they start; run lorad from a script or "
                "module (the workers import the main module), and check the log above"
            ) from None
        try:
            job = pool.submit(convert, entry.path, entry.converted, settings, entry.thumbnail)
            return job.result()
        except BrokenProcessPool:
            return ImageVerdict(accepted=False, reason=CRASHED)


def _pool(workers: int) -> ProcessPoolExecutor:
    # The daemon has threads: a forked child could inherit a lock held by another thread.
    # forkserver forks from a clean single-threaded server that has lorad.dataset.image loaded.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", "lorad.dataset.image"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def _apply_verdicts(images: list[Entry]) -> list[Entry]:
    """Turn verdicts into statuses; return the accepted entries, in order."""
    accepted = []
    for entry in images:
        verdict = entry.verdict
        assert verdict is not None
        entry.warnings = list(verdict.warnings)
        if verdict.accepted:
            entry.status = "accepted"
            accepted.append(entry)
        else:
            entry.status = "refused"
            entry.reason = verdict.reason
    return accepted


# Checks ---------------------------------------------------------------------------------------


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


# Layout and outputs ---------------------------------------------------------------------------


def _lay_out(accepted: list[Entry], train: Path, token: str) -> None:
    """Move the converted images to their numbered names, with the user captions beside them."""
    train.mkdir(parents=True)
    width = max(3, len(str(len(accepted))))
    for number, entry in enumerate(accepted, start=1):
        stem = f"{token}_{number:0{width}d}"
        entry.output = f"{stem}.png"
        assert entry.converted is not None
        os.replace(entry.converted, train / entry.output)
        if entry.caption is not None:
            write_caption(train / f"{stem}{CAPTION_EXTENSION}", entry.caption)


def _install(staging: Path, dest: Path, usable: bool) -> None:
    """Swap the new training folder in for the old one (or only remove the old one)."""
    target = dest / TRAIN_ROOT
    if target.exists():
        os.replace(target, staging / "previous")
    if usable:
        os.replace(staging / TRAIN_ROOT, target)


def _write_json(path: Path, data: Any) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def _manifest(accepted: list[Entry], token: str, repeats: int) -> dict[str, Any]:
    return {
        "token": token,
        "repeats": repeats,
        "train_dir": f"{TRAIN_ROOT}/{repeats}_{token}",
        "images": [
            {"name": entry.output, "source": entry.rel, "user_caption": entry.caption is not None}
            for entry in accepted
        ],
    }


def _file_report(entry: Entry) -> dict[str, Any]:
    verdict = entry.verdict
    before = verdict.size_before if verdict and verdict.size_before else (None, None)
    after = verdict.size_after if verdict and verdict.size_after else (None, None)
    return {
        "source": entry.rel,
        "output": entry.output,
        "status": entry.status,
        "reason": entry.reason or None,
        "warnings": entry.warnings,
        "format": verdict.format or None if verdict else None,
        "width_before": before[0],
        "height_before": before[1],
        "orientation": verdict.orientation if verdict else None,
        "width_after": after[0],
        "height_after": after[1],
        "sharpness": verdict.sharpness if verdict else None,
        "phash": verdict.phash or None if verdict else None,
        "phash_mirror": verdict.phash_mirror or None if verdict else None,
        "caption_file": entry.caption_file,
        "user_caption": entry.caption is not None,
        "checks": entry.checks,
    }


def _judge(
    entries: list[Entry], accepted: list[Entry], checks: Checks, options: PrepareOptions, dest: Path
) -> PrepareResult:
    refused = [entry for entry in entries if entry.status == "refused"]
    warnings = checks.warnings + [
        f"{shown(entry.rel)} {warning}" for entry in entries for warning in entry.warnings
    ]
    problems = checks.problems + [f"{shown(entry.rel)} {entry.reason}" for entry in refused]
    if not accepted:  # then what was dropped instead of photos is worth naming
        problems += [f"{shown(entry.rel)} is not a photo: lorad reads {FORMAT_NAMES} files"
                     for entry in entries if entry.reason == NOT_AN_IMAGE]
    strict_stop = options.strict and not checks.problems and bool(warnings or refused)
    if strict_stop:
        problems = [
            f"strict mode is on and there are {len(warnings)} warnings and {len(refused)} "
            "refused files: fix them, or turn strict off",
            *problems,
            *warnings,
        ]
    usable = not checks.problems and not strict_stop
    if usable:
        message = f"{len(accepted)} images ready ({len(refused)} refused, {len(warnings)} warnings)"
    else:
        message = _refusal(problems)
    repeats = options.repeats or max(1, REPEAT_BUDGET // max(1, len(accepted)))
    return PrepareResult(
        usable=usable,
        message=message,
        accepted=len(accepted),
        refused=len(refused),
        warnings=warnings,
        problems=problems,
        repeats=repeats,
        train_dir=dest / TRAIN_ROOT / f"{repeats}_{options.token}",
        report_path=dest / REPORT,
        sheet_path=dest / SHEET,
    )


def _refusal(problems: list[str]) -> str:
    others = len(problems) - 1
    more = f" ({others} more problem{'s' if others > 1 else ''} in report.json)" if others else ""
    return f"The dataset cannot be used: {problems[0]}{more}"


def _report(
    source: Path, options: PrepareOptions, result: PrepareResult, entries: list[Entry],
    checks: Checks,
) -> dict[str, Any]:
    return {
        "source": str(source),
        "token": options.token,
        "prefix": options.prefix,
        "repeats": result.repeats,
        "strict": options.strict,
        "usable": result.usable,
        "message": result.message,
        "summary": {
            "images": sum(entry.status in ("accepted", "refused") for entry in entries),
            "accepted": result.accepted,
            "refused": result.refused,
            "ignored": sum(entry.status == "ignored" for entry in entries),
            "warnings": len(result.warnings),
        },
        "problems": result.problems,
        "warnings": result.warnings,
        "checks": checks.report,
        "settings": options.settings.model_dump(),
        "files": [_file_report(entry) for entry in entries],
    }


def _check_places(source: Path, dest: Path) -> None:
    if not source.is_dir():
        raise NotADirectoryError(f"{source} is not a folder")
    real_source, real_dest = source.resolve(), dest.resolve()
    if real_dest.is_relative_to(real_source) or real_source.is_relative_to(real_dest):
        raise ValueError(
            f"the output folder {dest} and the subject folder {source} overlap: the originals "
            "must stay untouched; use an output folder outside the subject folder"
        )


def _ticker(progress: Progress | None, total: int) -> Callable[[], None]:
    done = 0
    if progress is not None:
        progress(0, total)

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    return tick


def _sheet_cells(accepted: list[Entry]) -> list[tuple[str, Path]]:
    """(number, thumbnail) per accepted image: "001" for <token>_001.png."""
    return [
        (PurePosixPath(str(entry.output)).stem.rsplit("_", 1)[1], Path(str(entry.thumbnail)))
        for entry in accepted
    ]


# The public API -------------------------------------------------------------------------------


def prepare_dataset(
    source: Path, dest: Path, options: PrepareOptions, progress: Progress | None = None
) -> PrepareResult:
    """Check and convert every photo of `source` and lay out Kohya's dataset under `dest`."""
    source, dest = Path(source), Path(dest)
    _check_places(source, dest)
    entries = list_source(source, options.ignore)
    pairs = _pair_captions(entries)
    images = [entry for entry in entries if entry.status == "image"]

    staging = dest / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "converted").mkdir(parents=True)
    (staging / "thumbnails").mkdir()
    for number, entry in enumerate(images):
        entry.converted = staging / "converted" / f"{number:05d}.png"
        entry.thumbnail = staging / "thumbnails" / f"{number:05d}.png"
    _convert_all(images, options.settings, _ticker(progress, len(images)))

    accepted = _apply_verdicts(images)
    _attach_captions(accepted, pairs, options.prefix)
    checks = run_checks(accepted, options.settings)
    result = _judge(entries, accepted, checks, options, dest)

    staged_train = staging / result.train_dir.relative_to(dest)
    _lay_out(accepted, staged_train, options.token)
    refused = [(shown(entry.rel), entry.reason) for entry in entries if entry.status == "refused"]
    dataset_sheet(_sheet_cells(accepted), refused, result.sheet_path)
    _install(staging, dest, result.usable)
    if result.usable:
        _write_json(dest / MANIFEST, _manifest(accepted, options.token, result.repeats))
    else:
        (dest / MANIFEST).unlink(missing_ok=True)
    (dest / ZIP).unlink(missing_ok=True)
    _write_json(result.report_path, _report(source, options, result, entries, checks))
    shutil.rmtree(staging)
    return result


def write_zip(dest: Path, zip_path: Path) -> Path:
    """dataset.zip for hosted trainers: the training images and their captions, flat."""
    dest, zip_path = Path(dest), Path(zip_path)
    try:
        manifest = json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{dest} holds no usable prepared dataset (no {MANIFEST}): prepare it first"
        ) from None
    train = dest / manifest["train_dir"]
    partial = zip_path.with_name(f".{zip_path.name}.partial")
    with zipfile.ZipFile(partial, "w") as archive:
        for image in manifest["images"]:
            path = train / image["name"]
            archive.write(path, path.name, compress_type=zipfile.ZIP_STORED)
            caption = path.with_suffix(CAPTION_EXTENSION)
            if caption.exists():
                archive.write(caption, caption.name, compress_type=zipfile.ZIP_DEFLATED)
    os.replace(partial, zip_path)
    return zip_path


def content_fingerprint(source: Path, ignore: Iterable[str] = ()) -> str:
    """sha256 over the sorted sha256s of the image files' bytes: order- and name-independent."""
    digests = []
    for entry in list_source(Path(source), ignore):
        if entry.status == "image":
            with entry.path.open("rb") as file:
                digests.append(hashlib.file_digest(file, "sha256").hexdigest())
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()
