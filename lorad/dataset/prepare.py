"""Dataset preparation: a subject folder of photos in; Kohya's training folder, a report and a
contact sheet out.

`prepare_dataset` lists the folder (`lorad.dataset.listing`), converts every image in a process
pool (`lorad.dataset.image.process_image`, run here), runs the dataset checks
(`lorad.dataset.checks`), judges the set and writes report.json (`lorad.dataset.report`) and
lays out what Kohya reads (`lorad.dataset.layout`), with the contact sheet dataset.png.

The subject folder is only read. Outputs are built in <dest>/.prepare-staging and moved into
place; running again on the same dest rebuilds them.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from lorad.dataset.checks import check_mirrored_faces, run_checks
from lorad.dataset.image import ImageVerdict, process_image
from lorad.dataset.layout import MANIFEST, ZIP, install, lay_out, sheet_cells, write_manifest
from lorad.dataset.listing import Entry, attach_captions, list_source, pair_captions, shown
from lorad.dataset.options import PrepareOptions
from lorad.dataset.report import PrepareResult, judge, write_report
from lorad.dataset.sheets import dataset_sheet
from lorad.settings import PrepareSettings

STAGING = ".prepare-staging"
CRASHED = (
    "crashed the image decoder (the worker process died while reading it): re-save it as JPEG "
    "or PNG"
)

Progress = Callable[[int, int], None]
Convert = Callable[[Path, Path, PrepareSettings, Path | None], ImageVerdict]


def prepare_dataset(
    source: Path, dest: Path, options: PrepareOptions, progress: Progress | None = None
) -> PrepareResult:
    """Check and convert every photo of `source` and lay out Kohya's dataset under `dest`."""
    source, dest = Path(source), Path(dest)
    _check_places(source, dest)
    entries = list_source(source, options.ignore)
    pairs = pair_captions(entries)
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
    attach_captions(accepted, pairs, options.prefix)
    checks = run_checks(accepted, options.settings)
    if options.faces:
        check_mirrored_faces(accepted, checks, _mirrored_faces(accepted))
    result = judge(entries, accepted, checks, options, dest)

    staged_train = staging / result.train_dir.relative_to(dest)
    lay_out(accepted, staged_train, options.token)
    refused = [(shown(entry.rel), entry.reason) for entry in entries if entry.status == "refused"]
    dataset_sheet(sheet_cells(accepted), refused, result.sheet_path)
    install(staging, dest, result.usable)
    if result.usable:
        write_manifest(dest, accepted, options.token, result.repeats)
    else:
        (dest / MANIFEST).unlink(missing_ok=True)
    (dest / ZIP).unlink(missing_ok=True)
    write_report(source, options, result, entries, checks)
    shutil.rmtree(staging)
    return result


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


def _mirrored_faces(accepted: list[Entry]) -> dict[str, tuple[float, float]]:
    """The photos whose face looks mirrored against the others' (dlib, in this process: the
    prepare child's; only asked for when the faces extra is installed)."""
    from lorad.likeness.child import LoadError, describe_all
    from lorad.likeness.protocol import Image
    from lorad.likeness.score import mirrored_faces

    by_path = {entry.converted: entry.rel for entry in accepted if entry.converted}
    try:
        found = list(describe_all([Image(path=path, mirror=True) for path in by_path]))
    except LoadError:
        return {}
    return mirrored_faces({by_path[face.path]: (face.descriptor, face.mirrored) for face in found
                           if face.faces == 1 and face.descriptor and face.mirrored})


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
