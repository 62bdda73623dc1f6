"""Kohya's layout of a prepared dataset, and the files beside it for the later stages:

    <dest>/training_images/<repeats>_<token>/<token>_001.png   (+ <token>_001.txt: user caption)
    <dest>/manifest.json  which output came from which photo (only when the dataset is usable)
    <dest>/dataset.zip    the images and captions, flat, for hosted trainers (on request)

`lay_out` numbers the converted images into the training folder, `install` swaps it in for
the previous one, `write_manifest` and `write_zip` write the files beside it.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from lorad.captioning.text import write_caption
from lorad.dataset.listing import CAPTION_EXTENSION, Entry, shown
from lorad.dataset.sheets import Tile
from lorad.system.fsutil import atomic_write_text, atomic_write_with

TRAIN_ROOT = "training_images"
MANIFEST = "manifest.json"
ZIP = "dataset.zip"  # written by write_zip on request; a stale one is removed


def lay_out(accepted: list[Entry], train: Path, token: str) -> None:
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


def sheet_cells(accepted: list[Entry]) -> list[Tile]:
    """A tile per laid-out image: its number ("001" for <token>_001.png), its file name, its
    thumbnail and its warnings as the sheet's tags."""
    return [
        Tile(PurePosixPath(str(entry.output)).stem.rsplit("_", 1)[1], shown(entry.rel),
             Path(str(entry.thumbnail)), tuple(marks(entry)))
        for entry in accepted
    ]


def marks(entry: Entry) -> list[str]:
    """The short tags of an accepted photo's warnings, readable without colour: "DUP of a.jpg"
    and "MIRROR of b.jpg" on both photos of a pair, "BLURRY", "FRONT CAM", and "WARNING" for a
    decoding warning (its text is in report.json)."""
    checks = entry.checks
    found = [f"DUP of {shown(other)}" for other in checks.get("near_duplicate_of", [])]
    found += [f"MIRROR of {shown(other)}" for other in checks.get("mirror_of", [])]
    found += ["BLURRY"] if checks.get("blur", "ok") != "ok" else []
    found += ["FRONT CAM"] if checks.get("front_camera") else []
    found += ["WARNING"] if entry.verdict and entry.verdict.warnings else []
    return found


def install(staging: Path, dest: Path, usable: bool) -> None:
    """Swap the new training folder in for the old one (or only remove the old one)."""
    target = dest / TRAIN_ROOT
    if target.exists():
        os.replace(target, staging / "previous")
    if usable:
        os.replace(staging / TRAIN_ROOT, target)


def write_json(path: Path, data: Any) -> None:
    """`data` as indented JSON, in its own key order, written atomically."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def write_manifest(dest: Path, accepted: list[Entry], token: str, repeats: int) -> None:
    write_json(dest / MANIFEST, {
        "token": token,
        "repeats": repeats,
        "train_dir": f"{TRAIN_ROOT}/{repeats}_{token}",
        "images": [
            {"name": entry.output, "source": entry.rel, "user_caption": entry.caption is not None}
            for entry in accepted
        ],
    })


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
    names = [image["name"] for image in manifest["images"]]
    return atomic_write_with(zip_path, lambda tmp: _fill_zip(tmp, train, names))


def _fill_zip(path: Path, train: Path, names: list[str]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name in names:
            image = train / name
            archive.write(image, image.name, compress_type=zipfile.ZIP_STORED)
            caption = image.with_suffix(CAPTION_EXTENSION)
            if caption.exists():
                archive.write(caption, caption.name, compress_type=zipfile.ZIP_DEFLATED)
