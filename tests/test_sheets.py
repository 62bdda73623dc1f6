"""lorad.dataset.sheets: the dataset contact sheet and the samples grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from badimages import UNDECODABLE_NAME, scene
from PIL import Image

from lorad.dataset.sheets import (
    ALERT,
    CELL,
    GAP,
    MARGIN,
    MIN_WIDTH,
    PAPER,
    ROW_LABEL_WIDTH,
    THUMB,
    TITLE_SIZE,
    Tile,
    _font,
    _line_height,
    _wrap,
    dataset_sheet,
    samples_sheet,
)


def pictures(folder: Path, count: int, size: tuple[int, int] = (512, 384)) -> list[Path]:
    paths = []
    for index in range(count):
        path = folder / f"image_{index:03d}.jpg"
        scene(size, seed=300 + index).save(path, quality=90)
        paths.append(path)
    return paths


def colour_at(path: Path, x: int, y: int) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)[y, x]


def test_dataset_sheet_numbers_the_images_and_lists_refused_files(tmp_path):
    paths = pictures(tmp_path, 3)
    refused = [
        ("broken.jpg", "could not be decoded: the file is damaged " * 6),
        (repr("odd\nname " + UNDECODABLE_NAME), "is not an image: it holds text"),
    ]
    out = dataset_sheet([Tile(f"{n + 1:03d}", path.name, path) for n, path in enumerate(paths)],
                        refused, tmp_path / "dataset.png")
    assert out == tmp_path / "dataset.png"
    with Image.open(out) as sheet:
        width, height = sheet.size
    assert width == max(MIN_WIDTH, 3 * (THUMB + GAP) - GAP) + 2 * MARGIN
    assert height > THUMB + 4 * 20  # the grid, then the refused lines below it
    centre = colour_at(out, MARGIN + THUMB // 2, height // 2 - 80)
    assert not np.array_equal(centre, PAPER)  # a thumbnail, not paper
    assert not list(tmp_path.glob(".*partial"))


def test_dataset_sheet_grid_wraps_at_eight_columns_and_stays_small(tmp_path):
    paths = pictures(tmp_path, 9, size=(1024, 768))
    out = dataset_sheet([Tile(f"{n:03d}", path.name, path) for n, path in enumerate(paths)], [],
                        tmp_path / "dataset.png")
    with Image.open(out) as sheet:
        assert sheet.width == 8 * (THUMB + GAP) - GAP + 2 * MARGIN
        assert 2 * THUMB < sheet.height < 3 * THUMB
    assert out.stat().st_size < 1_500_000


def test_dataset_sheet_names_each_tile_and_frames_the_marked_ones(tmp_path):
    """Tiles carry their file names and warning tags, in the picture and in the PNG's text (so a
    warning line "mirror.jpg is a mirror image of IMG_1002.jpg" can be matched to its tile); a
    marked tile is framed, an unmarked one is not."""
    first, second, third = pictures(tmp_path, 3)
    long_name = "IMG_1001 copy of a copy with a very long name that does not fit.jpg"
    tiles = [Tile("001", long_name, first, ("DUP of IMG_1001.jpg",)),
             Tile("002", "IMG_1001.jpg", second, ("DUP of " + long_name, "BLURRY")),
             Tile("003", "plain.jpg", third)]
    out = dataset_sheet(tiles, [], tmp_path / "dataset.png")
    with Image.open(out) as sheet:
        labels = json.loads(sheet.text["lorad:tiles"])
    assert labels == [{"number": t.number, "file": t.file, "marks": list(t.marks)} for t in tiles]
    top = MARGIN + _line_height(_font(TITLE_SIZE)) + GAP  # the title line above the grid
    for index, framed in enumerate((True, True, False)):
        x = MARGIN + index * (THUMB + GAP)
        edge = [colour_at(out, x + 1, y) for y in range(top + 20, top + THUMB - 20, 10)]
        on_frame = [abs(c - np.array(ALERT)).max() <= 12 for c in edge]
        assert all(on_frame) if framed else not any(on_frame), index


def test_dataset_sheet_without_images_still_explains(tmp_path):
    out = dataset_sheet([], [("a.jpg", "is empty (0 bytes)")], tmp_path / "dataset.png")
    with Image.open(out) as sheet:
        assert sheet.width == MIN_WIDTH + 2 * MARGIN


def test_samples_sheet_has_a_row_per_point_and_a_column_per_prompt(tmp_path):
    one, two, three = pictures(tmp_path, 3)
    unreadable = tmp_path / "unreadable.png"
    unreadable.write_bytes(b"not a png")
    prompts = ["a photo of alice", "alice " + "riding a bicycle through a sunny park " * 4, "x"]
    rows = [("epoch 1", [one, None, two]), ("epoch 2 · step 300", [three, unreadable, one])]
    out = samples_sheet(rows, prompts, tmp_path / "samples.png")
    with Image.open(out) as sheet:
        width, height = sheet.size
    left = MARGIN + ROW_LABEL_WIDTH + GAP
    assert width == left + 3 * (THUMB + GAP) - GAP + MARGIN
    top = height - MARGIN - 2 * THUMB - GAP
    missing = colour_at(out, left + THUMB + GAP + 10, top + 10)
    assert np.abs(missing - np.array(CELL)).max() <= 8  # an empty cell, in the palette's nearest
    picture = colour_at(out, left + THUMB // 2, top + THUMB // 2)
    assert np.abs(picture - np.array(CELL)).max() > 8


@pytest.mark.parametrize("width", [60, 120, 256])
def test_wrap_keeps_lines_inside_the_width_and_shortens(width):
    font = _font(16)
    text = "a very long prompt about alice, " * 10 + "supercalifragilisticexpialidocious" * 3
    lines = _wrap(text, font, width, max_lines=3)
    assert len(lines) == 3 and lines[-1].endswith("...")
    assert all(font.getlength(line) <= width for line in lines)
    assert _wrap("two words", font, width) == ["two words"] if width > 80 else True
