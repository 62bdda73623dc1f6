"""lorad.dataset: listing, conversion in a pool, checks, Kohya's layout, report, zip."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from pathlib import Path

import pytest
from badimages import FRONT_LENS, scene, write_corpus
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from lorad.dataset.checks import check_blur, check_count, find_duplicates
from lorad.dataset.image import ImageVerdict, process_image
from lorad.dataset.layout import write_zip
from lorad.dataset.listing import content_fingerprint, list_source
from lorad.dataset.options import PrepareOptions
from lorad.dataset.prepare import CRASHED, _convert_all, prepare_dataset
from lorad.settings import PrepareSettings

SMALL = PrepareSettings(min_images=2, few_images=2, workers=2)  # small sets without count warnings


def options(settings: PrepareSettings = SMALL, **changes) -> PrepareOptions:
    values = {"token": "alice", "prefix": "alice, ", "repeats": None, "strict": False}
    return PrepareOptions(settings=settings, **{**values, **changes})


def photos(folder: Path, names: list[str], first_seed: int = 100) -> list[Path]:
    """Distinct, sharp photo-like JPEGs at the given relative paths."""
    paths = []
    for offset, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        scene((512, 512), seed=first_seed + offset).save(path, quality=92)
        paths.append(path)
    return paths


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under `folder`: file hashes, link targets, kinds, modes and times."""
    seen = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            info = path.lstat()
            if path.is_symlink():
                seen[str(path)] = f"link {os.readlink(path)}"
            elif stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                seen[str(path)] = f"file {digest} {info.st_mode} {info.st_mtime_ns}"
            else:
                seen[str(path)] = f"other {info.st_mode} {info.st_mtime_ns}"
    return seen


def report_of(dest: Path) -> dict:
    return json.loads((dest / "report.json").read_text(encoding="utf-8"))


def files_by_source(dest: Path) -> dict[str, dict]:
    return {item["source"]: item for item in report_of(dest)["files"]}


# The bad-image corpus, prepared once --------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory):
    source = tmp_path_factory.mktemp("corpus") / "subject"
    source.mkdir()
    expected = write_corpus(source)
    before = snapshot(source)
    dest = tmp_path_factory.mktemp("dest")
    result = prepare_dataset(source, dest, options(PrepareSettings(workers=2)))
    return source, dest, expected, result, before


def test_corpus_every_file_gets_its_own_verdict(corpus_run):
    _, dest, expected, _, _ = corpus_run
    reported = files_by_source(dest)
    assert set(reported) == set(expected)
    wrong = []
    for name, expect in expected.items():
        item = reported[name]
        texts = [item["reason"] or "", *item["warnings"]]
        if item["status"] != expect.status or not any(expect.text in text for text in texts):
            wrong.append(f"{name!r}: {item['status']} {texts}, expected {expect}")
    assert not wrong, "\n".join(wrong)


def test_corpus_leaves_the_originals_untouched(corpus_run):
    source, _, _, _, before = corpus_run
    assert snapshot(source) == before


def test_corpus_outputs_are_complete_and_consistent(corpus_run):
    _, dest, expected, result, _ = corpus_run
    accepted = sorted(name for name, expect in expected.items() if expect.status == "accepted")
    refused = [name for name, expect in expected.items() if expect.status == "refused"]
    assert result.usable and result.accepted == len(accepted) and result.refused == len(refused)
    assert result.message.startswith(f"{len(accepted)} images ready ({len(refused)} refused")
    assert len(result.problems) == len(refused)
    assert result.sheet_path.stat().st_size > 0 and result.report_path.is_file()
    report = report_of(dest)
    assert report["usable"] and report["summary"]["accepted"] == len(accepted)
    manifest = json.loads((dest / "manifest.json").read_text())
    assert [image["source"] for image in manifest["images"]] == accepted
    assert sorted(path.name for path in result.train_dir.iterdir()) == [
        image["name"] for image in manifest["images"]
    ]
    for path in result.train_dir.iterdir():
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "RGB" and max(image.size) <= 2048
    assert sorted(os.listdir(dest)) == ["dataset.png", "manifest.json", "report.json",
                                        "training_images"]


def test_corpus_report_gives_sizes_hashes_and_checks(corpus_run):
    _, dest, _, _, _ = corpus_run
    reported = files_by_source(dest)
    huge = reported["huge.jpg"]
    assert (huge["width_before"], huge["height_before"]) == (4200, 3000)
    assert (huge["width_after"], huge["height_after"]) == (2048, 1463)
    assert huge["output"].startswith("alice_") and len(huge["phash"]) == 16
    assert huge["sharpness"] > 0 and huge["checks"]["blur"]
    assert reported["front_camera.jpg"]["checks"]["front_camera"] == FRONT_LENS
    checks = report_of(dest)["checks"]
    assert {"source": "front_camera.jpg", "why": f"front camera: {FRONT_LENS}"} in (
        checks["possibly_mirrored"]
    )
    assert {"first": "inside_link.jpg", "second": "plain.jpg", "distance": 0,
            "mirrored": False} in checks["duplicates"]


# Quality checks ----------------------------------------------------------------------------


def test_blur_near_duplicates_and_mirrors_are_found(tmp_path):
    source = tmp_path / "subject"
    sharp = photos(source, [f"photo_{n}.jpg" for n in range(6)])
    with Image.open(sharp[0]) as image:
        image.filter(ImageFilter.GaussianBlur(4)).save(source / "x_blurred.jpg", quality=92)
    with Image.open(sharp[1]) as image:
        ImageOps.mirror(image).save(source / "x_mirrored.png")
    with Image.open(sharp[2]) as image:
        brighter = ImageEnhance.Brightness(image).enhance(1.1)
        brighter.save(source / "x_recompressed.jpg", quality=50)
    result = prepare_dataset(source, tmp_path / "dest", options())
    checks = report_of(tmp_path / "dest")["checks"]

    assert checks["blur"]["blurry"] == ["x_blurred.jpg"]
    pairs = {(d["first"], d["second"], d["mirrored"]) for d in checks["duplicates"]}
    assert ("photo_1.jpg", "x_mirrored.png", True) in pairs
    assert ("photo_2.jpg", "x_recompressed.jpg", False) in pairs
    assert ("photo_0.jpg", "x_blurred.jpg", False) in pairs  # blurred, but the same picture
    assert not any(first.startswith("photo_") and second.startswith("photo_")
                   for first, second, _ in pairs)
    reported = files_by_source(tmp_path / "dest")
    assert reported["x_mirrored.png"]["checks"]["mirror_of"] == ["photo_1.jpg"]
    assert checks["possibly_mirrored"] == [
        {"source": "x_mirrored.png", "why": "mirror image of photo_1.jpg"}
    ]
    assert reported["photo_2.jpg"]["checks"]["near_duplicate_of"] == ["x_recompressed.jpg"]
    assert any(line.startswith("x_blurred.jpg looks blurry") for line in result.warnings)
    assert any(line.startswith("x_mirrored.png is a mirror image of photo_1.jpg")
               for line in result.warnings)
    assert result.usable  # warnings only report by default
    with Image.open(result.sheet_path) as sheet:  # the labels drawn on dataset.png, read back
        tiles = {tile["file"]: tile for tile in json.loads(sheet.text["lorad:tiles"])}
    assert [tiles[f"photo_{n}.jpg"]["number"] for n in range(6)] == [
        "001", "002", "003", "004", "005", "006"]
    assert tiles["photo_1.jpg"]["marks"] == ["MIRROR of x_mirrored.png"]
    assert tiles["x_mirrored.png"]["marks"] == ["MIRROR of photo_1.jpg"]
    assert tiles["photo_2.jpg"]["marks"] == ["DUP of x_recompressed.jpg"]
    assert tiles["x_recompressed.jpg"]["marks"] == ["DUP of photo_2.jpg"]
    assert tiles["x_blurred.jpg"]["marks"] == ["DUP of photo_0.jpg", "BLURRY"]
    assert [tiles[f"photo_{n}.jpg"]["marks"] for n in (3, 4, 5)] == [[], [], []]


def test_blur_is_also_judged_against_the_dataset_median():
    settings = PrepareSettings(blur_threshold=60, blur_relative=0.2)
    median, found = check_blur({"a": 1000.0, "b": 1200.0, "c": 900.0, "d": 150.0, "e": 30.0},
                               settings)
    assert median == 900.0
    assert set(found) == {"d", "e"}
    assert "under 20% of the median 900" in found["d"] and "under 60" in found["e"]


def test_find_duplicates_compares_against_the_mirror_too():
    plain = "ff00ff00ff00ff00"
    mirrored = "00ff00ff00ff00ff"
    other = "0f0f0f0f0f0f0f0f"
    found = find_duplicates({"a": (plain, mirrored), "b": (mirrored, plain), "c": (other, other)},
                            max_distance=6)
    assert [(d.first, d.second, d.mirrored) for d in found] == [("a", "b", True)]


@pytest.mark.parametrize(
    ("count", "problem", "warning"),
    [
        (0, "no usable photos", None),
        (1, "only 1 usable image;", None),
        (4, "only 4 usable images", None),
        (5, None, "only 5 images"),
        (10, None, "variation will be low"),
        (11, None, None),
        (100, None, None),
        (101, None, "more than needed"),
    ],
)
def test_count_guidance_follows_the_settings(count, problem, warning):
    found_problem, found_warning = check_count(count, PrepareSettings())
    assert (found_problem is None) == (problem is None)
    assert (found_warning is None) == (warning is None)
    assert problem is None or problem in found_problem
    assert warning is None or warning in found_warning


def test_too_few_images_refuse_the_dataset(tmp_path):
    source = tmp_path / "subject"
    photos(source, ["a.jpg", "b.jpg", "c.jpg"])
    (source / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    result = prepare_dataset(source, tmp_path / "dest", options(PrepareSettings(workers=2)))
    assert not result.usable
    assert result.message.startswith("The dataset cannot be used: only 3 usable images; at least 5")
    assert any(line.startswith("broken.jpg ") for line in result.problems)
    assert not (tmp_path / "dest" / "training_images").exists()
    assert not (tmp_path / "dest" / "manifest.json").exists()
    assert result.report_path.is_file() and result.sheet_path.is_file()
    assert report_of(tmp_path / "dest")["usable"] is False


def test_a_folder_with_no_photo_at_all_names_what_was_dropped_instead(tmp_path):
    source = tmp_path / "subject"
    source.mkdir()
    (source / "notes.pdf").write_bytes(b"%PDF-1.4")
    (source / "lora.toml").write_text('token = "alice"\n')
    result = prepare_dataset(source, tmp_path / "dest", options(PrepareSettings(workers=1)))
    assert not result.usable
    assert result.message.startswith("The dataset cannot be used: no usable photos")
    assert result.problems[1:] == [
        "notes.pdf is not a photo: lorad reads JPEG, PNG, WebP, BMP, TIFF, AVIF, GIF or HEIC "
        "files"]


def test_strict_mode_turns_warnings_and_refusals_into_a_refusal(tmp_path):
    source = tmp_path / "subject"
    photos(source, ["a.jpg", "b.jpg", "c.jpg"])
    (source / "notes.jpg").write_text("not a photo")
    relaxed = prepare_dataset(source, tmp_path / "relaxed", options())
    strict = prepare_dataset(source, tmp_path / "strict", options(strict=True))
    assert relaxed.usable and relaxed.refused == 1
    assert not strict.usable and "strict mode" in strict.message
    assert any(line.startswith("notes.jpg is not an image") for line in strict.problems)
    (source / "notes.jpg").unlink()
    assert prepare_dataset(source, tmp_path / "clean", options(strict=True)).usable


# Captions, layout, repeated runs -----------------------------------------------------------


def test_user_captions_are_kept_with_the_prefix_added_once(tmp_path):
    source = tmp_path / "subject"
    photos(source, ["a.jpg", "b.jpg", "c.png", "d.jpg", "e.jpg", "f.jpg"])
    (source / "a.txt").write_text("alice smiling", encoding="utf-8")
    (source / "b.TXT").write_text("a woman\n  at the beach \n\n", encoding="utf-8")
    (source / "c.txt").write_text("\ufeffalice, in a red hat", encoding="utf-8")
    (source / "d.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    (source / "e.txt").write_text("  \n", encoding="utf-8")
    (source / "orphan.txt").write_text("no photo for me", encoding="utf-8")
    result = prepare_dataset(source, tmp_path / "dest", options())

    train = result.train_dir
    captions = {path.name: path.read_text(encoding="utf-8") for path in train.glob("*.txt")}
    assert captions == {
        "alice_001.txt": "alice smiling\n",
        "alice_002.txt": "alice, a woman at the beach\n",
        "alice_003.txt": "alice, in a red hat\n",
    }
    manifest = json.loads((tmp_path / "dest" / "manifest.json").read_text())
    assert [image["user_caption"] for image in manifest["images"]] == [True] * 3 + [False] * 3
    assert "d.jpg has a caption file d.txt that is not UTF-8: ignored (save it as UTF-8)" in (
        result.warnings
    )
    assert "e.jpg has an empty caption file e.txt: it is ignored" in result.warnings
    reported = files_by_source(tmp_path / "dest")
    assert reported["orphan.txt"]["status"] == "ignored"
    assert reported["b.TXT"]["status"] == "caption"


def test_layout_numbers_images_by_source_path_and_sets_repeats(tmp_path):
    source = tmp_path / "subject"
    photos(source, ["z.jpg", "b/2.jpg", "a.jpg", "b/1.jpg", "B.jpg"])
    result = prepare_dataset(source, tmp_path / "dest", options())
    assert result.repeats == 400 // 5
    assert result.train_dir == tmp_path / "dest" / "training_images" / "80_alice"
    manifest = json.loads((tmp_path / "dest" / "manifest.json").read_text())
    assert manifest["train_dir"] == "training_images/80_alice"
    assert manifest["token"] == "alice" and manifest["repeats"] == 80
    assert [(image["name"], image["source"]) for image in manifest["images"]] == [
        ("alice_001.png", "B.jpg"),
        ("alice_002.png", "a.jpg"),
        ("alice_003.png", "b/1.jpg"),
        ("alice_004.png", "b/2.jpg"),
        ("alice_005.png", "z.jpg"),
    ]
    given = prepare_dataset(source, tmp_path / "given", options(repeats=3))
    assert given.train_dir.name == "3_alice" and given.repeats == 3


def test_running_twice_rebuilds_the_outputs(tmp_path):
    source, dest = tmp_path / "subject", tmp_path / "dest"
    paths = photos(source, [f"p{n}.jpg" for n in range(6)])
    first = prepare_dataset(source, dest, options())
    write_zip(dest, dest / "dataset.zip")
    paths[0].unlink()
    second = prepare_dataset(source, dest, options())
    assert (first.train_dir.name, second.train_dir.name) == ("66_alice", "80_alice")
    assert [path.name for path in (dest / "training_images").iterdir()] == ["80_alice"]
    assert len(list(second.train_dir.iterdir())) == 5
    assert sorted(os.listdir(dest)) == ["dataset.png", "manifest.json", "report.json",
                                        "training_images"]
    for path in paths[2:]:
        path.unlink()
    third = prepare_dataset(source, dest, options(PrepareSettings(workers=2)))
    assert not third.usable
    assert sorted(os.listdir(dest)) == ["dataset.png", "report.json"]


def test_listing_skips_control_and_junk_files_and_honours_ignore(tmp_path):
    source = tmp_path / "subject"
    photos(source, ["a.jpg", "b.jpg", "draft_c.jpg", "drafts/d.jpg"])
    for name in ("lora.toml", "error.txt", ".lorad-ready", "desktop.ini", "e.jpg.part",
                 "lorad-error.txt", "lorad-report.json"):
        (source / name).write_text("x")
    entries = {entry.rel: entry for entry in list_source(source, ["draft*"])}
    assert "lora.toml" not in entries and "error.txt" not in entries
    assert "lorad-error.txt" not in entries and "lorad-report.json" not in entries
    assert ".lorad-ready" not in entries
    assert {rel for rel, entry in entries.items() if entry.status == "image"} == {"a.jpg", "b.jpg"}
    assert {rel for rel, entry in entries.items() if entry.status == "ignored"} == {
        "desktop.ini", "e.jpg.part", "draft_c.jpg", "drafts/"
    }


def test_dest_inside_the_source_is_refused(tmp_path):
    photos(tmp_path, ["a.jpg"])
    with pytest.raises(ValueError, match="overlap"):
        prepare_dataset(tmp_path, tmp_path / "out", options())


def test_progress_counts_every_image(tmp_path):
    source = tmp_path / "subject"
    photos(source, ["a.jpg", "b.jpg", "c.jpg"])
    (source / "bad.png").write_bytes(b"")
    calls = []
    prepare_dataset(source, tmp_path / "dest", options(), progress=lambda *c: calls.append(c))
    assert calls[0] == (0, 4) and calls[-1] == (4, 4) and len(calls) == 5


def crashing_convert(
    src: Path, out: Path, settings: PrepareSettings, thumb: Path | None
) -> ImageVerdict:
    """Stands in for a decoder that kills its process on one file."""
    if src.name.startswith("crash"):
        os._exit(70)
    return process_image(src, out, settings, thumb)


def test_a_crashing_decoder_refuses_only_its_own_image(tmp_path):
    source = tmp_path / "subject"
    photos(source, ["a.jpg", "b.jpg", "crash.jpg", "d.jpg"])
    images = [entry for entry in list_source(source) if entry.status == "image"]
    for number, entry in enumerate(images):
        entry.converted = tmp_path / f"{number}.png"
    ticks = []
    _convert_all(images, SMALL, lambda: ticks.append(1), crashing_convert)
    verdicts = {entry.rel: entry.verdict for entry in images}
    assert verdicts["crash.jpg"] == ImageVerdict(accepted=False, reason=CRASHED)
    assert all(verdicts[name].accepted for name in ("a.jpg", "b.jpg", "d.jpg"))
    assert len(ticks) == 4


# Fingerprint and zip -----------------------------------------------------------------------


def test_content_fingerprint_ignores_names_order_and_non_images(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    originals = photos(one, ["a.jpg", "b.jpg", "c.jpg"])
    for index, path in enumerate(reversed(originals)):
        target = two / f"folder{index}" / f"renamed_{index}.JPG"
        target.parent.mkdir(parents=True)
        target.write_bytes(path.read_bytes())
    (two / "caption.txt").write_text("hello")
    (two / ".DS_Store").write_bytes(b"junk")
    (two / "lora.toml").write_text("token = 'x'")
    assert content_fingerprint(one) == content_fingerprint(two)
    data = bytearray(originals[0].read_bytes())
    data[-3] ^= 1
    originals[0].write_bytes(bytes(data))
    assert content_fingerprint(one) != content_fingerprint(two)


def test_write_zip_holds_the_images_and_captions_flat(tmp_path):
    source, dest = tmp_path / "subject", tmp_path / "dest"
    photos(source, ["nested/a.jpg", "b.jpg"])
    (source / "b.txt").write_text("alice, on a bench")
    result = prepare_dataset(source, dest, options())
    path = write_zip(dest, tmp_path / "dataset.zip")
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["alice_001.png", "alice_001.txt", "alice_002.png"]
        assert archive.read("alice_001.txt") == b"alice, on a bench\n"
        assert archive.read("alice_002.png") == (result.train_dir / "alice_002.png").read_bytes()
    with pytest.raises(FileNotFoundError, match="prepare it first"):
        write_zip(tmp_path / "nothing", tmp_path / "other.zip")
