"""Contact sheets, drawn with Pillow's built-in font.

- `dataset_sheet`: every accepted training image as a numbered thumbnail, refused files listed
  below the grid with their reasons.
- `samples_sheet`: training samples, one row per sampling point ("epoch 2"), one column per prompt.

Both are written atomically (temporary name, then os.replace) and return the path written.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

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

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def dataset_sheet(
    entries: list[tuple[str, Path]], refused: list[tuple[str, str]], out: Path
) -> Path:
    """A grid of (label, image) thumbnails, then one line per refused file: its name followed by
    its reason ("x.jpg" "is empty (0 bytes)...")."""
    font, title_font = _font(FONT_SIZE), _font(TITLE_SIZE)
    columns = max(1, min(MAX_COLUMNS, len(entries)))
    rows = math.ceil(len(entries) / columns)
    label_height = _line_height(font)
    cell_height = THUMB + label_height + GAP
    width = max(MIN_WIDTH, columns * (THUMB + GAP) - GAP) + 2 * MARGIN
    text_width = width - 2 * MARGIN
    refused_lines = [
        line for name, reason in refused for line in _wrap(f"{name} {reason}", font, text_width)
    ]
    title = f"accepted: {len(entries)}, refused: {len(refused)}"
    top = MARGIN + _line_height(title_font) + GAP
    grid_bottom = top + rows * cell_height
    refused_top = grid_bottom + (GAP + label_height if refused else 0)
    height = refused_top + len(refused_lines) * label_height + MARGIN

    sheet = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(sheet)
    draw.text((MARGIN, MARGIN), title, fill=INK, font=title_font)
    for index, (label, path) in enumerate(entries):
        x = MARGIN + (index % columns) * (THUMB + GAP)
        y = top + (index // columns) * cell_height
        sheet.paste(_thumbnail(path, font), (x, y))
        _centred(draw, _clean(label), x + THUMB // 2, y + THUMB + 2, font, INK)
    if refused:
        draw.text((MARGIN, grid_bottom + GAP), "Refused:", fill=ALERT, font=font)
    for number, line in enumerate(refused_lines):
        draw.text((MARGIN, refused_top + number * label_height), line, fill=INK, font=font)
    return _save(sheet, out)


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


def _lines(
    draw: ImageDraw.ImageDraw, lines: Sequence[str], x: int, y: int, font: Font, fill: tuple
) -> None:
    for number, line in enumerate(lines):
        draw.text((x, y + number * _line_height(font)), line, fill=fill, font=font)


def _centred(
    draw: ImageDraw.ImageDraw, text: str, x: int, y: int, font: Font, fill: tuple
) -> None:
    draw.text((x - font.getlength(text) / 2, y), text, fill=fill, font=font)


def _save(sheet: Image.Image, out: Path) -> Path:
    # Through fsutil: a full disk is reported as such, and no partial file stays behind.
    image = sheet.quantize(PALETTE_COLOURS)
    return atomic_write_with(Path(out), lambda tmp: image.save(tmp, format="PNG", optimize=True))
