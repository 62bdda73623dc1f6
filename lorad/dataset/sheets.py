"""Contact sheets, drawn with Pillow's built-in font.

- `dataset_sheet`: every accepted training image as a thumbnail labelled with its number and its
  file name, marked (a frame and short tags such as "DUP of IMG_1001.jpg", "BLURRY") with its
  warnings; refused files listed below the grid with their reasons. The labels drawn are also in
  the PNG's text metadata (`lorad:tiles`), for tools and tests to read back.
- `samples_sheet`: training samples, one row per sampling point ("epoch 2"), one column per prompt.

Both are written atomically (temporary name, then os.replace) and return the path written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps
from PIL.PngImagePlugin import PngInfo

from lorad.system.fsutil import atomic_write_with

THUMB = 256  # thumbnail cells are THUMB x THUMB
GAP = 8
MARGIN = 16
FONT_SIZE = 16
TITLE_SIZE = 22
MAX_COLUMNS = 8
MIN_WIDTH = 4 * THUMB  # room for the refused files' reasons on small datasets
ROW_LABEL_WIDTH = 160
HEADER_LINES = 3  # lines of prompt text above each samples column
PAPER = (250, 250, 250)
INK = (25, 25, 25)
MUTED = (120, 120, 120)
ALERT = (170, 30, 30)
CELL = (222, 222, 222)
FRAME = 4  # the frame around a marked row of samples
PALETTE_COLOURS = 256  # sheets are previews: a palette keeps them a few MB at most

TILES_KEY = "lorad:tiles"  # the PNG text chunk with the tiles' labels and marks, as JSON

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True)
class Tile:
    """One accepted photo on the dataset sheet: its training number ("001"), its file name in
    the subject folder, its thumbnail, and its warnings as short tags ("MIRROR of a.jpg")."""

    number: str
    file: str
    path: Path
    marks: tuple[str, ...] = ()


def dataset_sheet(tiles: list[Tile], refused: list[tuple[str, str]], out: Path) -> Path:
    """A grid of thumbnails, each labelled "001 IMG_1001.jpg" and, when it has warnings, framed
    with one tag a line under its name; then one line per refused file: its name followed by its
    reason ("x.jpg" "is empty (0 bytes)...")."""
    font, title_font = _font(FONT_SIZE), _font(TITLE_SIZE)
    columns = max(1, min(MAX_COLUMNS, len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    label_height = _line_height(font)
    cell_height = THUMB + label_height * (1 + max((len(t.marks) for t in tiles), default=0)) + GAP
    width = max(MIN_WIDTH, columns * (THUMB + GAP) - GAP) + 2 * MARGIN
    text_width = width - 2 * MARGIN
    refused_lines = [
        line for name, reason in refused for line in _wrap(f"{name} {reason}", font, text_width)
    ]
    title = f"accepted: {len(tiles)}, refused: {len(refused)}"
    top = MARGIN + _line_height(title_font) + GAP
    grid_bottom = top + rows * cell_height
    refused_top = grid_bottom + (GAP + label_height if refused else 0)
    height = refused_top + len(refused_lines) * label_height + MARGIN

    sheet = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(sheet)
    draw.text((MARGIN, MARGIN), title, fill=INK, font=title_font)
    for index, tile in enumerate(tiles):
        _draw_tile(sheet, draw, tile, MARGIN + (index % columns) * (THUMB + GAP),
                   top + (index // columns) * cell_height, font)
    if refused:
        draw.text((MARGIN, grid_bottom + GAP), "Refused:", fill=ALERT, font=font)
    for number, line in enumerate(refused_lines):
        draw.text((MARGIN, refused_top + number * label_height), line, fill=INK, font=font)
    labels = [{"number": t.number, "file": t.file, "marks": list(t.marks)} for t in tiles]
    return _save(sheet, out, {TILES_KEY: json.dumps(labels, ensure_ascii=False)})


def _draw_tile(sheet: Image.Image, draw: ImageDraw.ImageDraw, tile: Tile, x: int, y: int,
               font: Font) -> None:
    """The thumbnail, framed when marked (the frame reads without colour), its number and file
    name shortened to the tile's width, then one tag a line."""
    sheet.paste(_thumbnail(tile.path, font), (x, y))
    if tile.marks:
        draw.rectangle((x, y, x + THUMB - 1, y + THUMB - 1), outline=ALERT, width=FRAME)
    line_height = _line_height(font)
    _centred(draw, _middle_ellipsis(_clean(f"{tile.number} {tile.file}"), font, THUMB),
             x + THUMB // 2, y + THUMB + 2, font, INK)
    for number, mark in enumerate(tile.marks, start=1):
        _centred(draw, _middle_ellipsis(_clean(mark), font, THUMB), x + THUMB // 2,
                 y + THUMB + 2 + number * line_height, font, ALERT)


def samples_sheet(rows: list[tuple[str, list[Path | None]]], columns: list[str], out: Path,
                  marked: Collection[int] = ()) -> Path:
    """A grid of samples: one row per sampling point (labelled on the left), one column per
    prompt (shortened prompts on top); None marks a missing sample. The rows whose indexes are
    in `marked` (the final LoRA's epoch) are framed, so the mark reads without colour too."""
    font = _font(FONT_SIZE)
    line_height = _line_height(font)
    header = HEADER_LINES * line_height + GAP
    left = MARGIN + ROW_LABEL_WIDTH + GAP
    width = left + len(columns) * (THUMB + GAP) - GAP + MARGIN
    height = MARGIN + header + len(rows) * (THUMB + GAP) - GAP + MARGIN

    sheet = Image.new("RGB", (max(width, left + MARGIN), height), PAPER)
    draw = ImageDraw.Draw(sheet)
    for index, prompt in enumerate(columns):
        x = left + index * (THUMB + GAP)
        _lines(draw, _wrap(prompt, font, THUMB, HEADER_LINES), x, MARGIN, font, MUTED)
    for row, (label, cells) in enumerate(rows):
        y = MARGIN + header + row * (THUMB + GAP)
        label_lines = _wrap(label, font, ROW_LABEL_WIDTH, THUMB // line_height)
        _lines(draw, label_lines, MARGIN, y, font, INK)
        for index, path in enumerate(cells[: len(columns)]):
            sheet.paste(_thumbnail(path, font), (left + index * (THUMB + GAP), y))
        if row in marked:
            draw.rectangle((MARGIN // 4, y - GAP // 2, width - MARGIN // 4, y + THUMB + GAP // 2),
                           outline=INK, width=FRAME)
    return _save(sheet, out)


@cache
def _font(size: int) -> Font:
    return ImageFont.load_default(size=size)


def _line_height(font: Font) -> int:
    return int(font.getbbox("Ag")[3]) + 6


def _thumbnail(path: Path | None, font: Font) -> Image.Image:
    """A THUMB x THUMB cell: the picture centred, or a word saying why there is none."""
    cell = Image.new("RGB", (THUMB, THUMB), CELL)
    picture = _load(path) if path is not None else None
    if picture is None:
        word = "missing" if path is None else "unreadable"
        _centred(ImageDraw.Draw(cell), word, THUMB // 2, THUMB // 2 - 8, font, MUTED)
    else:
        cell.paste(picture, ((THUMB - picture.width) // 2, (THUMB - picture.height) // 2))
    return cell


def _load(path: Path) -> Image.Image | None:
    try:
        with Image.open(path) as image:
            image.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS, reducing_gap=2.0)
            return ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _clean(text: str) -> str:
    """Text the font can draw on one line: no undecodable characters, no control characters."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    return "".join(char if char.isprintable() else " " for char in text)


def _wrap(text: str, font: Font, width: int, max_lines: int = 0) -> list[str]:
    """Greedy word wrap to `width` pixels; over-long words are cut; "..." ends a cut-off text."""
    lines: list[str] = []
    line = ""
    for word in _clean(text).split():
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = word
        while font.getlength(line) > width:
            cut = _fitting(line, font, width)
            lines.append(line[:cut])
            line = line[cut:]
    if line:
        lines.append(line)
    if max_lines and len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = _ellipsis(lines[-1], font, width)
    return lines


def _fitting(text: str, font: Font, width: int) -> int:
    """How many leading characters of `text` fit in `width` (at least one)."""
    count = 1
    while count < len(text) and font.getlength(text[: count + 1]) <= width:
        count += 1
    return count


def _ellipsis(line: str, font: Font, width: int) -> str:
    while line and font.getlength(line + "...") > width:
        line = line[:-1]
    return line + "..."


def _middle_ellipsis(text: str, font: Font, width: int) -> str:
    """`text`, or its start and end around "..." when it is wider than `width`: the end of a file
    name (its number, its extension) is kept."""
    if font.getlength(text) <= width:
        return text
    keep = len(text)
    while keep > 2:
        keep -= 1
        head, tail = text[: (keep + 1) // 2], text[len(text) - keep // 2:]
        if font.getlength(f"{head}...{tail}") <= width:
            return f"{head}...{tail}"
    return "..."


def _lines(
    draw: ImageDraw.ImageDraw, lines: Sequence[str], x: int, y: int, font: Font, fill: tuple
) -> None:
    for number, line in enumerate(lines):
        draw.text((x, y + number * _line_height(font)), line, fill=fill, font=font)


def _centred(
    draw: ImageDraw.ImageDraw, text: str, x: int, y: int, font: Font, fill: tuple
) -> None:
    draw.text((x - font.getlength(text) / 2, y), text, fill=fill, font=font)


def _save(sheet: Image.Image, out: Path, text: dict[str, str] | None = None) -> Path:
    # Through fsutil: a full disk is reported as such, and no partial file stays behind.
    image = sheet.quantize(PALETTE_COLOURS)
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_itxt(key, value)  # iTXt: UTF-8, for file names in any language
    return atomic_write_with(Path(out), lambda tmp: image.save(tmp, format="PNG", optimize=True,
                                                               pnginfo=info))
