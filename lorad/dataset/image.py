"""One photo: fully decoded, checked, normalised to an upright 8-bit RGB PNG, and measured.

`process_image` is what a worker process runs for each file of a subject folder. It never raises for
a bad image: it returns an `ImageVerdict` whose `reason` says what is wrong with the file. Reasons
and warnings are phrased to follow the file's name ("photo.jpg" + " is empty (0 bytes): ...").
Only a failure to write the output raises (`lorad.system.fsutil.DiskFull` for a full disk).

While it runs, `process_image` sets Pillow's process-wide pixel limit (`Image.MAX_IMAGE_PIXELS`)
and turns DecompressionBombWarning into an error: run it in worker processes, not beside threads
that use Pillow.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import imagehash
import numpy as np
import pillow_heif
import scipy.fftpack  # noqa: F401  (imagehash.phash imports it on first use; see below)
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from lorad.dataset.sheets import THUMB
from lorad.settings import PrepareSettings
from lorad.system.fsutil import atomic_write_with

# scipy.fftpack is imported above so that the forkserver, which preloads this module, loads it
# once, instead of every worker process loading it on its first phash.
pillow_heif.register_heif_opener()

# The only decoders Pillow may use: anything else (EPS, PSD, ICO...) is "not an image" here.
# (MPO, a JPEG with a second picture, comes through the JPEG opener.)
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "AVIF", "GIF", "HEIF")
FORMAT_NAMES = "JPEG, PNG, WebP, BMP, TIFF, AVIF, GIF or HEIC"
DRAFT_FORMATS = ("JPEG", "MPO")  # JPEG can decode at 1/2, 1/4 or 1/8 scale
# File signatures, to tell a damaged image from something that is not an image at all.
SIGNATURES = (
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"GIF8", "GIF"),
    (0, b"BM", "BMP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (8, b"WEBP", "WebP"),
    (4, b"ftyp", "HEIC or AVIF"),
)
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
BACKGROUND = (128, 128, 128)  # transparent areas become neutral grey, not black
PNG_COMPRESS_LEVEL = 1  # the outputs are temporary training inputs: speed over size
WORK_SIDE = 512  # long side at which sharpness and hashes are measured
LENS_TAGS = (ExifTags.Base.LensModel, ExifTags.Base.LensMake)


@dataclass
class ImageVerdict:
    """What became of one image file. `reason` is empty when it was accepted."""

    accepted: bool
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    format: str = ""
    size_before: tuple[int, int] | None = None  # as stored in the file
    size_after: tuple[int, int] | None = None  # upright, after downscaling
    orientation: int = 1  # the EXIF orientation that was applied
    sharpness: float | None = None  # variance of the Laplacian at WORK_SIDE: low means blurry
    phash: str = ""
    phash_mirror: str = ""  # phash of the mirrored image, to find flipped copies
    lens: str = ""  # the EXIF lens description when it names a front camera


class Refused(Exception):
    """The file cannot be used; the message follows the file's name."""


def process_image(
    src: Path, out: Path, settings: PrepareSettings, thumb: Path | None = None
) -> ImageVerdict:
    """Decode `src` fully, write it to `out` as an upright RGB PNG, and measure it.

    With `thumb`, also write there the contact sheet's thumbnail (so that the sheet needs no
    second decode of the full-size output).
    """
    verdict = ImageVerdict(accepted=False)
    try:
        with _pixel_limit(settings.max_pixels) as caught:
            image = _load(Path(src), settings, verdict)
    except Refused as error:
        verdict.reason = str(error)
        return verdict
    verdict.warnings += [f"gave a warning while decoding ({_one_line(w.message)}); check that it "
                         "looks right in dataset.png" for w in caught]
    _save_png(image, Path(out))
    if thumb is not None:
        _save_png(_thumbnail(image), Path(thumb))
    verdict.accepted = True
    verdict.size_after = image.size
    _measure(image, verdict)
    return verdict


@contextmanager
def _pixel_limit(max_pixels: int) -> Iterator[list[warnings.WarningMessage]]:
    """Decoding under the pixel limit (a bomb warning becomes an error); yields the other warnings
    the image library gave (damaged metadata, say), to be told in the file's verdict."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield caught
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _load(src: Path, settings: PrepareSettings, verdict: ImageVerdict) -> Image.Image:
    """Open, check, decode and normalise one file, filling in what the verdict learns on the way."""
    try:
        empty = src.stat().st_size == 0
    except OSError as error:
        raise Refused(_unreadable(error)) from None
    if empty:
        raise Refused("is empty (0 bytes): copy the photo again from where it came from")
    with _open(src, settings.max_pixels) as image:
        verdict.format = image.format or ""
        verdict.size_before = image.size
        _check_size(image.size, settings)
        try:
            return _decode(image, settings, verdict)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise Refused(_bomb(settings.max_pixels)) from None
        except Exception as error:  # truncated or corrupt data surfaces here, from any decoder
            raise Refused(_undecodable(error)) from None


def _open(src: Path, max_pixels: int) -> Image.Image:
    try:
        return Image.open(src, formats=FORMATS)
    except UnidentifiedImageError:
        raise Refused(_not_an_image(src)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Refused(_bomb(max_pixels)) from None
    except (PermissionError, FileNotFoundError, IsADirectoryError) as error:
        raise Refused(_unreadable(error)) from None
    except Exception as error:  # a damaged header can raise almost anything inside a plugin
        raise Refused(_undecodable(error)) from None


def _decode(image: Image.Image, settings: PrepareSettings, verdict: ImageVerdict) -> Image.Image:
    verdict.warnings += _frame_warnings(image)
    verdict.orientation, verdict.lens = _exif_hints(image)
    _draft(image, settings.max_side)
    image.load()
    ImageOps.exif_transpose(image, in_place=True)
    return _downscale(_to_rgb(image), settings.max_side)


def _unreadable(error: OSError) -> str:
    return f"cannot be read ({error.strerror}): check that the file is there and readable"


def _bomb(max_pixels: int) -> str:
    return (
        f"has more pixels than the limit of {max_pixels:,} (prepare.max_pixels): it may be a "
        "decompression bomb; use a smaller image"
    )


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _undecodable(error: BaseException) -> str:
    return (
        f"could not be decoded ({type(error).__name__}: {_one_line(error)}): the file is damaged, "
        "truncated or an unusual variant of its format; copy it again from the original or "
        "re-save it as JPEG or PNG"
    )


def _not_an_image(src: Path) -> str:
    with src.open("rb") as file:
        head = file.read(1024)
    for offset, magic, name in SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return (
                f"starts like a {name} file but its header is damaged: copy it again from the "
                "original or re-save it as JPEG or PNG"
            )
    lowered = head.lower()
    if b"<html" in lowered or b"<!doctype html" in lowered:
        what = "a web page (HTML), perhaps saved instead of the photo"
    elif _looks_like_text(head):
        what = "text"
    else:
        what = "data in no supported image format"
    return f"is not an image: it holds {what}; use a {FORMAT_NAMES} file"


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(char.isprintable() or char in "\r\n\t" for char in text)


def _check_size(size: tuple[int, int], settings: PrepareSettings) -> None:
    width, height = size
    if min(size) < settings.min_side:
        raise Refused(
            f"is {width}x{height}; the short side must be at least {settings.min_side} px: "
            "use a larger photo"
        )
    fitted = fit_within(size, settings.max_side)
    if min(fitted) < settings.min_side:
        raise Refused(
            f"is {width}x{height}: too elongated; downscaled to {settings.max_side} px on the "
            f"long side, its short side would be {min(fitted)} px (under {settings.min_side}): "
            "crop it closer to the subject"
        )


def fit_within(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The size after downscaling so that the long side is at most `max_side` (never upscaled)."""
    width, height = size
    if max(size) <= max_side:
        return size
    scale = max_side / max(size)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _frame_warnings(image: Image.Image) -> list[str]:
    frames = getattr(image, "n_frames", 1)
    if frames > 1 and image.format != "MPO":  # MPO: a JPEG with a second, smaller picture
        return [f"is animated or has several pages ({frames} frames): only the first is used"]
    return []


def _exif_hints(image: Image.Image) -> tuple[int, str]:
    """The EXIF orientation and, when the lens is a front camera, its description."""
    exif = image.getexif()
    orientation = exif.get(ExifTags.Base.Orientation, 1)
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    for tag in LENS_TAGS:
        value = str(sub.get(tag) or exif.get(tag) or "").strip("\x00 ")
        if "front" in value.lower():
            return orientation, value
    return orientation, ""


def _draft(image: Image.Image, max_side: int) -> None:
    """Let a big JPEG decode at 1/2, 1/4 or 1/8 scale when it will be downscaled anyway."""
    if image.format in DRAFT_FORMATS and max(image.size) > max_side:
        width, height = image.size
        scale = max_side / max(image.size)
        image.draft("RGB", (int(width * scale) + 1, int(height * scale) + 1))


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, whatever the mode: high bit depths scaled, transparency composited onto grey."""
    if image.mode in HIGH_DEPTH_MODES:
        image = _to_8bit(image)
    if "transparency" in image.info and image.mode in ("P", "L", "RGB"):
        image = image.convert("RGBA")
    elif image.mode == "1":
        image = image.convert("L")
    if image.mode in ALPHA_MODES:
        return _flatten(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit integer and float greyscale to 0..255 instead of clipping it."""
    values = np.nan_to_num(np.asarray(image, dtype=np.float64))
    low, high = _value_range(image.mode, values)
    scaled = (values - low) * (255.0 / (high - low or 1.0))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _value_range(mode: str, values: np.ndarray) -> tuple[float, float]:
    """The nominal range (0..65535, or 0..1 for floats) unless the values fall outside it."""
    nominal = 1.0 if mode == "F" else 65535.0
    low, high = float(values.min()), float(values.max())
    if mode.startswith("I;16") or (low >= 0.0 and high <= nominal):
        return 0.0, nominal
    return low, high


def _flatten(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    flat = Image.new("RGB", rgba.size, BACKGROUND)
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def _downscale(image: Image.Image, max_side: int) -> Image.Image:
    target = fit_within(image.size, max_side)
    if target == image.size:
        return image
    return image.resize(target, Image.Resampling.LANCZOS)


def _save_png(image: Image.Image, out: Path) -> None:
    """Write without EXIF, text or colour profile: the pixels are all Kohya reads."""
    image.info = {}
    atomic_write_with(out, partial(image.save, format="PNG", compress_level=PNG_COMPRESS_LEVEL))


def _thumbnail(image: Image.Image) -> Image.Image:
    size = fit_within(image.size, THUMB)
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def _measure(image: Image.Image, verdict: ImageVerdict) -> None:
    """Sharpness and perceptual hashes, on greyscale scaled to WORK_SIDE (up or down)."""
    width, height = image.size
    scale = WORK_SIDE / max(width, height)
    size = max(1, round(width * scale)), max(1, round(height * scale))
    grey = image.convert("L").resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    verdict.sharpness = laplacian_variance(grey)
    verdict.phash = str(imagehash.phash(grey))
    verdict.phash_mirror = str(imagehash.phash(ImageOps.mirror(grey)))


def laplacian_variance(grey: Image.Image) -> float:
    """Variance of the 4-neighbour Laplacian of a greyscale image: the usual blur measure."""
    pixels = np.asarray(grey, dtype=np.float32)
    laplacian = (
        pixels[:-2, 1:-1] + pixels[2:, 1:-1] + pixels[1:-1, :-2] + pixels[1:-1, 2:]
        - 4.0 * pixels[1:-1, 1:-1]
    )
    return float(laplacian.var())
