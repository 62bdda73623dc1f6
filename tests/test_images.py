"""lorad.dataset.image: one file decoded, normalised to an upright 8-bit RGB PNG, measured."""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from badimages import FRONT_LENS, SIZE, jpeg_bytes, scene, write_corpus
from PIL import Image, ImageFilter

from lorad.dataset.image import fit_within, laplacian_variance, process_image
from lorad.settings import PrepareSettings
from lorad.system.fsutil import DiskFull

SETTINGS = PrepareSettings()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("corpus")
    return folder, write_corpus(folder)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("outputs")


def convert(corpus: tuple[Path, dict], outputs: Path, name: str, settings=SETTINGS):
    out = outputs / f"{hashlib.sha1(os.fsencode(name)).hexdigest()}.png"
    verdict = process_image(corpus[0] / name, out, settings)
    return verdict, out


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def test_every_regular_file_gets_the_expected_verdict(corpus, outputs):
    folder, expected = corpus
    wrong = []
    for name, expect in expected.items():
        path = folder / name
        if expect.status == "ignored" or path.is_symlink() or not path.is_file():
            continue  # links, pipes and junk are the listing's business (test_dataset)
        verdict, out = convert(corpus, outputs, name)
        status = "accepted" if verdict.accepted else "refused"
        if status != expect.status or (status == "refused" and expect.text not in verdict.reason):
            wrong.append(f"{name!r}: {status} {verdict.reason!r}, expected {expect}")
        elif verdict.accepted:
            with Image.open(out) as image:
                if image.mode != "RGB" or image.size != verdict.size_after:
                    wrong.append(f"{name!r}: wrote {image.mode} {image.size}")
        elif out.exists():
            wrong.append(f"{name!r}: refused but wrote an output")
        if any("\n" in text for text in [verdict.reason or "", *verdict.warnings]):
            wrong.append(f"{name!r}: a message of more than one line: {verdict.reason!r}")
    assert not wrong, "\n".join(wrong)


def test_damaged_metadata_is_used_with_a_warning_that_says_what_was_wrong(tmp_path):
    # One EXIF entry (the camera's make) whose data lies past the end of the EXIF block.
    entry = struct.pack("<HHII", 0x010F, 2, 100, 5000)
    ifd = b"II*\x00" + struct.pack("<IH", 8, 1) + entry + struct.pack("<I", 0)
    src = tmp_path / "damaged_exif.jpg"
    src.write_bytes(jpeg_bytes(scene(seed=50), exif=b"Exif\x00\x00" + ifd))
    verdict = process_image(src, tmp_path / "out.png", SETTINGS)
    assert verdict.accepted
    assert [w for w in verdict.warnings if "while decoding (Tag data larger than file" in w]


@pytest.mark.parametrize("name", ["grey16.png", "rgb16.png", "int32.tif", "float.tif"])
def test_high_bit_depth_is_scaled_not_clipped_white(corpus, outputs, name):
    verdict, out = convert(corpus, outputs, name)
    values = pixels(out)
    assert verdict.accepted
    assert 110 < values.mean() < 145  # a 0..max ramp: about mid grey on average
    assert values.min() < 10 and values.max() > 245  # the whole range, not a white sheet


def test_transparency_is_composited_onto_grey(corpus, outputs):
    _, rgba = convert(corpus, outputs, "rgba.png")
    _, la = convert(corpus, outputs, "la.png")
    _, palette = convert(corpus, outputs, "palette_transparent.png")
    left_half = pixels(rgba)[:, : SIZE[0] // 2 - 1]
    top_half = pixels(la)[: SIZE[1] // 2 - 1]
    corner = pixels(palette)[:99, :99]
    for transparent in (left_half, top_half, corner):
        assert np.all(transparent == 128)


def test_exif_orientation_is_applied_and_exif_removed(corpus, outputs):
    folder, _ = corpus
    verdict, out = convert(corpus, outputs, "rotated.jpg")
    assert verdict.size_before == (400, 300) and verdict.orientation == 6
    assert verdict.size_after == (300, 400)
    with Image.open(folder / "rotated.jpg") as source:
        upright = np.asarray(source.transpose(Image.Transpose.ROTATE_270), dtype=np.float64)
    assert np.abs(pixels(out) - upright).mean() < 2
    with Image.open(out) as image:
        assert not image.getexif() and "exif" not in image.info


def test_front_camera_lens_is_read_and_exif_not_copied(corpus, outputs):
    verdict, out = convert(corpus, outputs, "front_camera.jpg")
    assert verdict.lens == FRONT_LENS
    with Image.open(out) as image:
        assert not image.getexif()


def test_cmyk_keeps_its_colours(corpus, outputs):
    verdict, out = convert(corpus, outputs, "cmyk.jpg")
    original = np.asarray(scene(seed=12), dtype=np.float64)
    assert verdict.accepted and np.abs(pixels(out) - original).mean() < 8


def test_big_jpeg_is_downscaled_like_a_full_decode(corpus, outputs):
    folder, _ = corpus
    verdict, out = convert(corpus, outputs, "huge.jpg")
    assert verdict.size_before == (4200, 3000)
    assert verdict.size_after == (2048, 1463) == fit_within((4200, 3000), 2048)
    with Image.open(folder / "huge.jpg") as source:
        reference = source.convert("RGB").resize((2048, 1463), Image.Resampling.LANCZOS)
    # The JPEG draft (decoding at half scale) must not cost visible quality.
    assert np.abs(pixels(out) - np.asarray(reference, dtype=np.float64)).mean() < 3


@pytest.mark.parametrize("name", ["animated.gif", "animated.webp", "animated.png"])
def test_animation_gives_its_first_frame_and_a_warning(corpus, outputs, name):
    verdict, out = convert(corpus, outputs, name)
    assert any("3 frames" in warning for warning in verdict.warnings)
    result = pixels(out)
    first, second = (np.asarray(scene(seed=40 + n), dtype=np.float64) for n in range(2))
    assert np.abs(result - first).mean() < np.abs(result - second).mean() / 2


def test_the_pixel_limit_comes_from_settings_and_its_warning_is_an_error(corpus, outputs):
    limit = Image.MAX_IMAGE_PIXELS
    # Just over the limit: Pillow only warns (an error starts at twice the limit).
    settings = PrepareSettings(max_pixels=SIZE[0] * SIZE[1] - 1)
    verdict, out = convert(corpus, outputs, "plain.jpg", settings)
    assert not verdict.accepted and "decompression bomb" in verdict.reason
    assert limit == Image.MAX_IMAGE_PIXELS  # restored


def test_small_image_message_names_size_rule_and_remedy(tmp_path):
    scene((180, 240)).save(tmp_path / "small.png")
    verdict = process_image(tmp_path / "small.png", tmp_path / "out.png", SETTINGS)
    assert verdict.reason == (
        "is 180x240; the short side must be at least 256 px: use a larger photo"
    )


def test_unreadable_file_is_refused_not_raised(tmp_path):
    verdict = process_image(tmp_path / "gone.jpg", tmp_path / "out.png", SETTINGS)
    assert not verdict.accepted and "cannot be read" in verdict.reason


def test_sharpness_separates_sharp_from_blurred():
    sharp = scene((512, 512), seed=2).convert("L")
    blurred = sharp.filter(ImageFilter.GaussianBlur(3))
    assert laplacian_variance(sharp) > 10 * laplacian_variance(blurred)
    assert laplacian_variance(blurred) < SETTINGS.blur_threshold < laplacian_variance(sharp)


def test_verdict_survives_pickling(corpus, outputs):
    verdict, _ = convert(corpus, outputs, "plain.jpg")
    assert pickle.loads(pickle.dumps(verdict)) == verdict
    assert len(verdict.phash) == len(verdict.phash_mirror) == 16


def test_a_full_disk_raises_disk_full_which_crosses_a_process_unchanged(
        corpus, tmp_path, monkeypatch):
    def full(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(fp))

    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(DiskFull) as caught:
        process_image(corpus[0] / "plain.jpg", tmp_path / "out.png", SETTINGS)
    assert str(caught.value).startswith(f"the disk holding {tmp_path} is full (no space left);")
    assert str(pickle.loads(pickle.dumps(caught.value))) == str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_fit_within_never_upscales():
    assert fit_within((300, 200), 2048) == (300, 200)
    assert fit_within((4000, 3000), 2048) == (2048, 1536)
    assert fit_within((3000, 4000), 1000) == (750, 1000)
