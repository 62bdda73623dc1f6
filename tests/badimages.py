"""A generator of bad and awkward image files, and what lorad's preparation should make of each.

`write_corpus(folder)` writes every kind into `folder` and returns {relative path: Expect}, the
relative paths being those report.json uses. Expectations hold for the default PrepareSettings
(min_side 256, max_side 2048). `scene()` makes the photo-like pictures the files carry.
"""

from __future__ import annotations

import io
import os
import random
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import ExifTags, Image, ImageDraw

pillow_heif.register_heif_opener()

SIZE = (320, 288)
FRONT_LENS = "iPhone 12 front camera 2.71mm f/2.2"
ODD_NAME = "odd \"name\" it's\nnew line ñé 日本.png"
UNDECODABLE_NAME = os.fsdecode(b"latin1 caf\xe9.png")


@dataclass(frozen=True)
class Expect:
    status: str  # "accepted", "refused" or "ignored"
    text: str = ""  # a substring of the reason, or (accepted) of one of the warnings


def scene(size: tuple[int, int] = SIZE, seed: int = 0) -> Image.Image:
    """A photo-like picture: a smooth gradient, large and small shapes, fine noise.

    Sharp at any size (the small shapes keep edges when it is scaled down); each seed differs.
    """
    rng = random.Random(seed)
    width, height = size
    corners = Image.new("RGB", (2, 2))
    corners.putdata([_colour(rng) for _ in range(4)])
    image = corners.resize(size, Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    for count, scale in ((8, 0.5), (60, 0.06)):
        for _ in range(count):
            x0, y0 = rng.randrange(width), rng.randrange(height)
            x1 = x0 + max(2, int(rng.uniform(0.2, 1) * scale * width))
            y1 = y0 + max(2, int(rng.uniform(0.2, 1) * scale * height))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape([x0, y0, x1, y1], fill=_colour(rng))
    noise = Image.effect_noise(size, 40).convert("RGB")
    return Image.blend(image, noise, 0.1)


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(256), rng.randrange(256), rng.randrange(256)


def jpeg_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand: `rows` are the unfiltered scanlines (a 0 filter byte is added)."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    stride = len(rows) // height if height else 0
    scanlines = b"".join(b"\x00" + rows[i * stride : (i + 1) * stride] for i in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(scanlines))
        + png_chunk(b"IEND", b"")
    )


def bomb_png(side: int = 40_000) -> bytes:
    """A PNG that claims side x side pixels with a tiny IDAT: Pillow checks the size at open."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def png_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def _write(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data) and None


def _save(image: Image.Image, **options) -> Callable[[Path], None]:
    return lambda path: image.save(path, **options)


def _frames(fmt: str) -> Callable[[Path], None]:
    frames = [scene(seed=40 + n) for n in range(3)]
    return lambda path: frames[0].save(
        path, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0
    )


def _rotated() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "TestCam"
    return jpeg_bytes(scene((400, 300), seed=3), exif=exif)


def _front_camera() -> bytes:
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.LensModel] = FRONT_LENS
    return jpeg_bytes(scene(seed=4), exif=exif)


def _rgba() -> Image.Image:
    image = scene(seed=5).convert("RGBA")
    alpha = Image.new("L", image.size, 255)
    ImageDraw.Draw(alpha).rectangle([0, 0, image.width // 2, image.height], fill=0)
    image.putalpha(alpha)
    return image


def _palette_transparent() -> Image.Image:
    image = scene(seed=6).quantize(64)
    ImageDraw.Draw(image).rectangle([0, 0, 99, 99], fill=63)
    image.info["transparency"] = 63
    return image


def _la() -> Image.Image:
    grey = scene(seed=7).convert("L")
    alpha = Image.new("L", grey.size, 255)
    ImageDraw.Draw(alpha).rectangle([0, 0, grey.width, grey.height // 2], fill=0)
    return Image.merge("LA", (grey, alpha))


def _gradient16() -> Image.Image:
    ramp = np.linspace(0, 65535, SIZE[0] * SIZE[1]).reshape(SIZE[1], SIZE[0])
    return Image.fromarray(ramp.astype(np.uint16))


def _rgb16_png() -> bytes:
    width, height = SIZE
    ramp = np.linspace(0, 65535, width * height * 3).reshape(height, width, 3)
    return raw_png(width, height, 16, 2, ramp.astype(">u2").tobytes())


def _float_image() -> Image.Image:
    ramp = np.linspace(0.0, 1.0, SIZE[0] * SIZE[1]).reshape(SIZE[1], SIZE[0])
    return Image.fromarray(ramp.astype(np.float32))


def _int32_image() -> Image.Image:
    ramp = np.linspace(0, 65535, SIZE[0] * SIZE[1]).reshape(SIZE[1], SIZE[0])
    return Image.fromarray(ramp.astype(np.int32))


def _corrupt_idat() -> bytes:
    data = bytearray(png_bytes(scene(seed=8)))
    start = data.index(b"IDAT") + 4
    data[start : start + 400] = bytes(range(200)) * 2
    return bytes(data)


def _bad_header_crc() -> bytes:
    data = bytearray(png_bytes(scene(seed=9)))
    crc_at = 8 + 4 + 4 + 13  # signature, IHDR length and type, IHDR data
    data[crc_at] ^= 0xFF
    return bytes(data)


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _cut(data: bytes, keep: float) -> bytes:
    """The first part of a file, as a copy that stopped early leaves it."""
    return data[: int(len(data) * keep)]


def _sof_bomb() -> bytes:
    """A small JPEG whose frame header claims 60000 x 60000 pixels."""
    data = bytearray(jpeg_bytes(scene(seed=36)))
    frame = data.index(b"\xff\xc0")
    data[frame + 5 : frame + 9] = struct.pack(">HH", 60_000, 60_000)
    return bytes(data)


def _gif_bomb() -> bytes:
    """A GIF whose screen descriptor claims 65000 x 65000 pixels."""
    data = bytearray(_encoded(scene(seed=31).quantize(64), "GIF"))
    data[6:10] = struct.pack("<HH", 65_000, 65_000)
    return bytes(data)


def _zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photos/readme.txt", "the photos were meant to be here\n")
    return buffer.getvalue()


def _png_header(width: int, height: int, depth: int) -> bytes:
    """A PNG of a signature, an IHDR with these values, and IEND: no pixel data."""
    header = struct.pack(">IIBBBBB", width, height, depth, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b"")


SVG = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="300" '
       b'height="300"><rect width="300" height="300"/></svg>\n')
PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n"
ELF = b"\x7fELF\x02\x01\x01" + bytes(249)
RIFF_WEBP = b"RIFF\x20\x00\x00\x00WEBPVP8 "
JFIF_HEADER_ONLY = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"


def _more_bad_kinds() -> dict[str, tuple[Callable[[Path], None], Expect]]:
    """Files cut short in every format, impostors and damaged headers: each refused."""
    noise = random.Random(99).randbytes(4096)
    damaged, decoded = "header is damaged", "could not be decoded"
    foreign = "holds data in no supported image format"
    return {
        "cut.webp": (_write(_cut(_encoded(scene(seed=30), "WEBP", quality=80), 0.5)),
                     Expect("refused", decoded)),
        "cut.gif": (_write(_cut(_encoded(scene(seed=31).quantize(64), "GIF"), 0.33)),
                    Expect("refused", "truncated")),
        "cut.heic": (_write(_cut(_encoded(scene(seed=32), "HEIF", quality=80), 0.5)),
                     Expect("refused", decoded)),
        "cut.avif": (_write(_cut(_encoded(scene(seed=33), "AVIF", quality=60, speed=10), 0.5)),
                     Expect("refused", damaged)),
        "cut.tiff": (_write(_cut(_encoded(scene(seed=34), "TIFF"), 0.33)),
                     Expect("refused", "truncated")),
        "cut.bmp": (_write(_cut(_encoded(scene(seed=35), "BMP"), 0.5)),
                    Expect("refused", "truncated")),
        "noise.jpg": (_write(noise), Expect("refused", foreign)),
        "zeros.png": (_write(bytes(4096)), Expect("refused", foreign)),
        "archive.jpg": (_write(_zip_archive()), Expect("refused", foreign)),
        "program.png": (_write(ELF), Expect("refused", foreign)),
        "utf16.png": (_write("a note, not a photo".encode("utf-16")), Expect("refused", foreign)),
        "psd_header.jpg": (_write(b"8BPS\x00\x01" + bytes(100)), Expect("refused", foreign)),
        "icon.png": (_save(scene((64, 64), seed=41), format="ICO"),
                     Expect("refused", foreign)),
        "drawing.png": (_write(SVG), Expect("refused", "holds text")),
        "document.jpg": (_write(PDF), Expect("refused", "holds text")),
        "header_only.jpg": (_write(JFIF_HEADER_ONLY), Expect("refused", damaged)),
        "signature_only.png": (_write(b"\x89PNG\r\n\x1a\n"), Expect("refused", damaged)),
        "zero_height.png": (_write(_png_header(300, 0, 8)), Expect("refused", damaged)),
        "bad_depth.png": (_write(_png_header(300, 300, 7)), Expect("refused", damaged)),
        "bad_ifd.tif": (_write(b"II*\x00" + struct.pack("<I", 10**8) + bytes(100)),
                        Expect("refused", damaged)),
        "bad_header.bmp": (_write(b"BM" + random.Random(98).randbytes(60)),
                           Expect("refused", decoded)),
        "riff_junk.webp": (_write(RIFF_WEBP + random.Random(97).randbytes(40)),
                           Expect("refused", decoded)),
        "bomb.jpg": (_write(_sof_bomb()), Expect("refused", "decompression bomb")),
        "bomb.gif": (_write(_gif_bomb()), Expect("refused", "decompression bomb")),
        "small.jpg": (_write(jpeg_bytes(scene((120, 90), seed=40))),
                      Expect("refused", "is 120x90; the short side")),
        "sliver.png": (_save(Image.new("RGB", (1, 600), "red")),
                       Expect("refused", "is 1x600; the short side")),
    }


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 300 300\nnewpath 0 0 moveto showpage\n"
HTML = b"<!DOCTYPE html>\n<html><head><title>Photo</title></head><body>404</body></html>\n"


def _kinds() -> dict[str, tuple[Callable[[Path], None], Expect]]:
    """Relative path -> (writer, expectation), for the regular files of the corpus."""
    plain = jpeg_bytes(scene(seed=1))
    truncated_png = png_bytes(scene(seed=10))
    truncated_jpeg = jpeg_bytes(scene(seed=11))[:6000]
    return {
        "plain.jpg": (_write(plain), Expect("accepted")),
        "truncated.jpg": (_write(truncated_jpeg), Expect("refused", "truncated")),
        "truncated.png": (_write(truncated_png[: len(truncated_png) // 2]),
                          Expect("refused", "could not be decoded")),
        "empty.jpg": (_write(b""), Expect("refused", "empty (0 bytes)")),
        "text.jpg": (_write(b"just some notes, not a photo\n"), Expect("refused", "holds text")),
        "page.png": (_write(HTML), Expect("refused", "web page")),
        "eps_named.jpg": (_write(EPS), Expect("refused", "not an image")),
        "bomb.png": (_write(bomb_png()), Expect("refused", "decompression bomb")),
        "tiny.gif": (_save(Image.new("P", (1, 1))), Expect("refused", "is 1x1; the short side")),
        "narrow.png": (_save(Image.new("RGB", (100, 5000), "teal")),
                       Expect("refused", "must be at least 256 px")),
        "elongated.png": (_save(Image.new("RGB", (300, 8000), "navy")),
                          Expect("refused", "too elongated")),
        "bad_header_crc.png": (_write(_bad_header_crc()), Expect("refused", "header is damaged")),
        "bad_data.png": (_write(_corrupt_idat()), Expect("refused", "could not be decoded")),
        "cmyk.jpg": (_save(scene(seed=12).convert("CMYK"), quality=92), Expect("accepted")),
        "grey16.png": (_save(_gradient16()), Expect("accepted")),
        "rgb16.png": (_write(_rgb16_png()), Expect("accepted")),
        "float.tif": (_save(_float_image()), Expect("accepted")),
        "int32.tif": (_save(_int32_image()), Expect("accepted")),
        "rgba.png": (_save(_rgba()), Expect("accepted")),
        "palette_transparent.png": (_save(_palette_transparent()), Expect("accepted")),
        "la.png": (_save(_la()), Expect("accepted")),
        "grey.png": (_save(scene(seed=13).convert("L")), Expect("accepted")),
        "bilevel.png": (_save(scene(seed=14).convert("1")), Expect("accepted")),
        "rotated.jpg": (_write(_rotated()), Expect("accepted")),
        "front_camera.jpg": (_write(_front_camera()), Expect("accepted", "front camera")),
        "photo.heic": (_save(scene(seed=15), format="HEIF", quality=80), Expect("accepted")),
        "photo.avif": (_save(scene(seed=16), format="AVIF", quality=60, speed=10),
                       Expect("accepted")),
        "animated.webp": (_frames("WEBP"), Expect("accepted", "only the first is used")),
        "animated.gif": (_frames("GIF"), Expect("accepted", "only the first is used")),
        "animated.png": (_frames("PNG"), Expect("accepted", "only the first is used")),
        ODD_NAME: (_save(scene(seed=17)), Expect("accepted")),
        UNDECODABLE_NAME: (_save(scene(seed=18)), Expect("accepted")),
        "huge.jpg": (_save(scene((4200, 3000), seed=19), quality=85), Expect("accepted")),
        "garbage_after.jpg": (_write(jpeg_bytes(scene(seed=20)) + os.urandom(3000)),
                              Expect("accepted")),
        "progressive.jpg": (_write(jpeg_bytes(scene(seed=21), progressive=True)),
                            Expect("accepted")),
        "png_named.jpg": (_write(png_bytes(scene(seed=22))), Expect("accepted")),
        "SHOUTING.JPEG": (_write(jpeg_bytes(scene(seed=23))), Expect("accepted")),
        "photo.bmp": (_save(scene(seed=24)), Expect("accepted")),
        "photo.tiff": (_save(scene(seed=25)), Expect("accepted")),
        "photo.webp": (_save(scene(seed=26), quality=85), Expect("accepted")),
        "nested/deeper/inside.jpg": (_write(jpeg_bytes(scene(seed=27))), Expect("accepted")),
        "notes.pdf": (_write(b"%PDF-1.4\n"), Expect("ignored", "not an image or a caption")),
        "lonely.txt": (_write(b"a caption without its photo\n"),
                       Expect("ignored", "no photo of the same name")),
        ".DS_Store": (_write(b"\x00\x00\x00\x01Bud1"), Expect("ignored", "hidden, system")),
        "._plain.jpg": (_write(b"\x00\x05\x16\x07"), Expect("ignored", "hidden, system")),
        "Thumbs.db": (_write(b"\xd0\xcf\x11\xe0"), Expect("ignored", "hidden, system")),
        "__MACOSX/._x.jpg": (_write(b"\x00\x05\x16\x07"), Expect("ignored")),
        **_more_bad_kinds(),
    }


def write_corpus(folder: Path) -> dict[str, Expect]:
    """Write every kind into `folder`; return the expectation per report.json relative path."""
    expected: dict[str, Expect] = {}
    for rel, (write, expect) in _kinds().items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
        expected[rel] = expect
    expected["__MACOSX/"] = expected.pop("__MACOSX/._x.jpg")  # the folder is skipped whole
    os.symlink("/etc/passwd", folder / "passwd.jpg")
    expected["passwd.jpg"] = Expect("refused", "outside the subject folder")
    os.symlink(folder / "missing.jpg", folder / "dangling.jpg")
    expected["dangling.jpg"] = Expect("refused", "broken link")
    os.symlink("plain.jpg", folder / "inside_link.jpg")
    expected["inside_link.jpg"] = Expect("accepted")  # plain.jpg is warned as its duplicate
    os.symlink("nested", folder / "nested_link")
    expected["nested_link"] = Expect("ignored", "link to a folder inside")
    os.symlink("/etc", folder / "etc_link")
    expected["etc_link"] = Expect("refused", "outside the subject folder")
    os.mkfifo(folder / "fifo.jpg")
    expected["fifo.jpg"] = Expect("refused", "not a regular file")
    return expected
