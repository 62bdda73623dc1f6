"""The likeness score: dlib's real face descriptor on a real face photo, and the rules that turn
distances into a score per epoch and a suggestion."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lorad.likeness.client import describe_faces
from lorad.likeness.protocol import Image, faces_installed
from lorad.likeness.score import Likeness, reference_problem, score_epoch, suggest
from lorad.settings import ScoreSettings
from lorad.training.kohya.command import prompt_file_text, samples_per_prompt
from tests import faces

needs_faces = pytest.mark.skipif(not faces_installed(), reason="lorad[faces] is not installed")
RULES = ScoreSettings(enabled=True)


@pytest.fixture(scope="module")
def described(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("faces")
    original = faces._save(folder, {"original": faces.astronaut()})[0]
    paths = [original, *faces.near_copies(folder), faces.mirrored(folder),
             *faces.distorted(folder), *faces.no_faces(folder)]
    found = describe_faces([Image(path=path) for path in paths])
    return {path.stem: found[path] for path in paths}


def _distance(described: dict, name: str) -> float:
    return math.dist(described["original"].descriptor, described[name].descriptor)


@needs_faces
def test_crops_colour_changes_and_the_mirror_of_a_face_stay_close_to_it(described) -> None:
    distances = {name: round(_distance(described, name), 3)
                 for name in [*faces.NEAR, "mirrored"]}
    print("astronaut, near copies:", distances)
    assert all(described[name].faces == 1 for name in distances)
    assert max(distances.values()) < 0.3  # dlib: under 0.6 is usually the same person


@needs_faces
def test_heavy_distortion_moves_a_face_away(described) -> None:
    near = max(_distance(described, name) for name in faces.NEAR)
    far = {name: round(_distance(described, name), 3) for name in faces.DISTORTED}
    print("astronaut, distorted:", far)
    assert min(far.values()) > near + 0.1


@needs_faces
def test_noise_and_pictures_without_a_face_have_no_face(described) -> None:
    for name in ("noise", "coffee", "cat"):
        assert described[name].faces == 0 and described[name].descriptor is None


def _epoch(score: float | None, faces_found: int = 4, spread: float = 0.3) -> Likeness:
    return Likeness(samples=4, faces=faces_found, score=score,
                    spread=spread if faces_found > 1 else None, same=spread < RULES.min_spread)


def test_the_suggestion_is_the_last_good_epoch_before_the_drift() -> None:
    epochs = {1: _epoch(None, 0), 2: _epoch(0.71), 3: _epoch(0.45), 4: _epoch(0.38),
              5: _epoch(0.40), 6: _epoch(0.44), 7: _epoch(0.51), 8: _epoch(0.55, 2)}
    suggestion = suggest(epochs, RULES)
    assert suggestion.epoch == 5
    assert suggestion.reason == ("epoch 5 looks most like the person (0.40; epochs 6–8 drift: "
                                 "0.44, 0.51, 0.55 faces 2/4)")


def test_when_every_epoch_is_as_good_the_newest_is_suggested() -> None:
    suggestion = suggest({n: _epoch(0.40 + n / 1000) for n in range(1, 5)}, RULES)
    assert suggestion.epoch == 4 and suggestion.reason.endswith("and it is the newest")


def test_samples_that_collapsed_onto_one_picture_are_never_suggested() -> None:
    epochs = {1: _epoch(0.42), 2: _epoch(0.40), 3: _epoch(0.30, spread=0.01)}
    suggestion = suggest(epochs, RULES)
    assert suggestion.epoch == 2 and "0.30 all the same" in suggestion.reason


def test_without_faces_or_likeness_there_is_no_suggestion() -> None:
    assert suggest({1: _epoch(None, 0), 2: _epoch(None, 0)}, RULES).epoch is None
    undertrained = suggest({1: _epoch(0.8), 2: _epoch(0.7)}, RULES)
    assert undertrained.epoch is None and "undertrained" in undertrained.reason


def test_training_photos_without_one_face_each_are_not_scored_against() -> None:
    assert reference_problem([1, 1, 0, 2]) is None
    assert "no single face" in reference_problem([0, 0, 1, 0, 2])
    assert "no single face" in reference_problem([])


def test_an_epoch_is_scored_from_its_samples_faces() -> None:
    reference = [[0.0] * 128]
    sample = [0.1] + [0.0] * 127
    likeness = score_epoch(reference, [sample, None, [0.3] + [0.0] * 127, None], RULES)
    assert (likeness.faces, likeness.samples, likeness.score) == (2, 4, 0.2)
    assert likeness.spread == pytest.approx(0.2) and not likeness.same
    assert likeness.label() == "likeness 0.20, faces 2/4"


def test_each_prompt_is_sampled_again_with_the_next_seeds() -> None:
    text = prompt_file_text(["photo of alice", "alice smiling"], {"seed": 10}, per_prompt=2)
    lines = text.splitlines()
    assert [line.split(" --")[0] for line in lines] == ["photo of alice", "alice smiling"] * 2
    assert [line.split("--d ")[1].split()[0] for line in lines] == ["10", "11", "12", "13"]
    assert samples_per_prompt(["p"] * 16, 8) == 6  # an epoch's samples stay numbered _00_.._99_
    assert ScoreSettings().per_prompt() == 1 and ScoreSettings(enabled=True).per_prompt() == 4


@needs_faces
def test_the_dataset_check_names_the_photo_whose_face_is_mirrored(tmp_path: Path) -> None:
    from lorad.dataset.options import PrepareOptions
    from lorad.dataset.prepare import prepare_dataset
    from lorad.settings import PrepareSettings

    source = tmp_path / "eileen"
    faces.near_copies(source, ["crop", "warm", "dark", "narrow"])
    faces.mirrored(source)
    settings = PrepareSettings(min_images=3, few_images=3, workers=1)
    result = prepare_dataset(source, tmp_path / "dest", PrepareOptions(
        token="eileen", prefix="eileen, ", repeats=None, strict=False, settings=settings,
        faces=True))
    named = [w for w in result.warnings if "face mirrored" in w]
    print("mirrored faces:", named)
    assert len(named) == 1 and named[0].startswith("mirrored.png")
    report = json.loads(result.report_path.read_text())
    assert any(item["source"] == "mirrored.png" and item["why"].startswith("face mirrored")
               for item in report["checks"]["possibly_mirrored"])


def test_the_done_message_names_the_suggested_epoch_and_how_to_take_it() -> None:
    from lorad.delivery.manifest import Final, Manifest
    from lorad.delivery.messages import likeness_lines
    from lorad.likeness.score import Suggestion
    from lorad.store import Job

    job = Job.from_row({"id": 12, "name": "alice", "state": "done", "stage": "notify",
                        "created_at": 0.0, "updated_at": 0.0})
    m = Manifest(suggestion=Suggestion(epoch=5, reason="epoch 5 looks most like the person"))
    assert likeness_lines(m, job) == [
        "Likeness: epoch 5 looks most like the person; lorad pick 12 --epoch 5"]
    m.final = Final(epoch=5, how="picked", at=0.0)
    assert likeness_lines(m, job) == ["Likeness: epoch 5 looks most like the person (it is the "
                                      "LoRA)"]
    m.suggestion = Suggestion(reason="no single face", scored=False)
    assert likeness_lines(m, job) == []
