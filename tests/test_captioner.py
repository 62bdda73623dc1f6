"""BLIP captioning with a tiny random model: the generation code, the child process, the launcher.

Each child process imports torch (about 3 s here), so the tests that start a real one are few;
the batching tests run the child's code in this process. `tiny_blip` (conftest.py) is the folder
that tests/blipfixture.py's build_tiny_blip fills.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lorad.captioning.client
from lorad.captioning import blip
from lorad.captioning.client import (
    CaptionCancelled,
    CaptionError,
    CaptionJob,
    caption_folder,
    images_to_caption,
    run_captioner,
)
from lorad.captioning.protocol import Job, Request
from lorad.captioning.text import compile_phrases
from lorad.settings import CaptionSettings


def make_images(folder: Path, count: int, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(start, start + count):
        pixels = np.random.default_rng(index).integers(0, 255, (72, 96, 3), dtype=np.uint8)
        path = folder / f"{index:02d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def read_captions(paths: list[Path]) -> list[str]:
    return [path.with_suffix(".txt").read_text(encoding="utf-8") for path in paths]


def assert_prefixed_once(caption: str, prefix: str) -> None:
    assert caption.endswith("\n") and caption.count("\n") == 1
    assert caption.startswith(prefix) and caption.count(prefix.strip()) == 1
    assert len(caption) > len(prefix) + 1  # BLIP's words follow the prefix


def assert_gone(pid: int) -> None:
    """The process and its process group no longer exist."""
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


def test_the_daemon_never_imports_torch_or_transformers() -> None:
    """Every module of the package (the command line, the daemon, every stage, the captioning
    and face launchers), imported in a fresh interpreter: the heavy libraries (dlib too) stay out
    until a child needs them."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import lorad\n"
        "names = [m.name for m in pkgutil.walk_packages(lorad.__path__, 'lorad.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "heavy = ('torch', 'transformers', 'dlib')\n"
        "print(len(names), sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    count, heavy = result.stdout.strip().split(" ", 1)
    assert int(count) >= 40  # every module of every subpackage was found
    assert heavy == "[]"


def test_the_protocol_keeps_stdout_for_events() -> None:
    code = (
        "import os; from lorad.system.jsonchild import Protocol; "
        "protocol = Protocol(); print('chatter from python', flush=True); "
        "os.write(1, b'chatter from C\\n'); protocol.emit('loaded', model='m')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"event": "loaded", "model": "m"}
    ]
    assert "chatter from python" in result.stderr and "chatter from C" in result.stderr


@pytest.mark.parametrize(
    ("setting", "cuda_count", "device"),
    [("auto", 0, "cpu"), ("auto", 2, "cuda:0"), ("cpu", 1, "cpu"), ("cuda", 1, "cuda:0"),
     ("cuda:1", 2, "cuda:1")],
)
def test_choose_device(setting: str, cuda_count: int, device: str) -> None:
    assert blip.choose_device(setting, cuda_count) == device


def test_a_gpu_that_is_not_visible_is_a_load_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(blip.LoadError, match=r"'cuda'.* 0 CUDA device.*CUDA_VISIBLE_DEVICES=''"):
        blip.choose_device("cuda", 0)
    with pytest.raises(blip.LoadError, match="'cuda:1'"):
        blip.choose_device("cuda:1", 1)


@pytest.mark.parametrize(
    ("setting", "device", "flags", "dtype"),
    [("auto", "cuda:0", set(), "float16"), ("auto", "cpu", {"avx2", "avx512_bf16"}, "bfloat16"),
     ("auto", "cpu", {"amx_bf16"}, "bfloat16"), ("auto", "cpu", {"asimd", "bf16"}, "bfloat16"),
     ("auto", "cpu", {"avx2", "avx512f"}, "float32"), ("float32", "cpu", {"avx512_bf16"},
     "float32"), ("bfloat16", "cuda:1", set(), "bfloat16")],
)
def test_precision_is_half_on_a_gpu_and_bfloat16_only_on_a_cpu_that_computes_it(
        setting: str, device: str, flags: set[str], dtype: str) -> None:
    assert blip.choose_dtype(setting, device, flags) == dtype


def test_cpu_flags_are_read_from_cpuinfo_on_x86_and_arm(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert blip.cpu_flags(x86) == {"fpu", "avx2", "avx512_bf16"}
    assert blip.cpu_flags(arm) == {"fp", "asimd", "bf16"}
    assert blip.cpu_flags(tmp_path / "missing") == set()


def test_bfloat16_on_the_cpu_captions_every_image(tiny_blip: Path, tmp_path: Path) -> None:
    settings = CaptionSettings(model=str(tiny_blip), device="cpu", precision="bfloat16")
    request = lorad.captioning.client.build_request([], settings)
    half = blip.load_captioner(request.model, request.device, request.generation,
                               request.precision)
    assert str(half.dtype) == "torch.bfloat16"
    job = Job(job_id=1, prefix="alice, ", images=make_images(tmp_path, 3))
    assert blip.caption_job(half, job, 2, [], lambda *_, **__: None) == []
    for caption in read_captions(job.images):
        assert_prefixed_once(caption, "alice, ")


@pytest.fixture(scope="module")
def captioner(tiny_blip: Path) -> blip.Captioner:
    # float32, so that captions can be compared with plain transformers' to the letter
    settings = CaptionSettings(model=str(tiny_blip), device="cpu", precision="float32")
    request = lorad.captioning.client.build_request([], settings)
    return blip.load_captioner(request.model, request.device, request.generation,
                               request.precision)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_every_image_gets_a_caption_batched_or_not(
    captioner: blip.Captioner, tmp_path: Path, batch_size: int
) -> None:
    job = Job(job_id=1, prefix="alice, ", images=make_images(tmp_path, 5))
    events = []
    warnings = blip.caption_job(
        captioner,
        job,
        batch_size,
        compile_phrases(CaptionSettings().remove),
        lambda event, **fields: events.append((event, fields)),
    )
    assert warnings == []
    for caption in read_captions(job.images):
        assert_prefixed_once(caption, "alice, ")
    done = [fields["done"] for _, fields in events]
    assert done == ([1, 2, 3, 4, 5] if batch_size == 1 else [4, 5])


class ScriptedBlip:
    """Stands in for a loaded BLIP: returns the given raw captions, in order."""

    def __init__(self, raws: list[str]) -> None:
        self.raws = iter(raws)

    def caption(self, images: list) -> list[str]:
        return [next(self.raws) for _ in images]


def test_the_clean_up_rules_apply_to_what_blip_generates(tmp_path: Path) -> None:
    """BLIP's false phrases go, repeats are said once; a caption that comes out empty is the
    prefix alone, with a warning naming the image."""
    images = make_images(tmp_path, 3)
    raws = ["arafed woman holding a remote control in front of a wall",
            "there is a a man with a microphone in his hand",
            "there is holding a remote control"]
    job = Job(job_id=7, prefix="alice, ", images=images)
    warnings = blip.caption_job(ScriptedBlip(raws), job, 2,
                                compile_phrases(CaptionSettings().remove),
                                lambda event, **fields: None)
    assert read_captions(images) == ["alice, woman in front of a wall\n", "alice, a man\n",
                                      "alice,\n"]
    assert warnings == ["02.png: BLIP's caption 'there is holding a remote control' was empty "
                        "after clean-up; wrote the prefix alone"]


def test_configured_remove_phrases_are_regular_expressions_applied_to_blip_output(
        tmp_path: Path) -> None:
    [image] = make_images(tmp_path, 1)
    patterns = compile_phrases(["wearing a (?:red|blue) shirt"])
    assert blip.finish_caption(image, "a man wearing a Blue shirt in a park", "bob, ",
                               patterns) is None
    assert read_captions([image]) == ["bob, a man in a park\n"]


def test_captions_are_those_of_plain_transformers_generate(
    captioner: blip.Captioner, tmp_path: Path
) -> None:
    import torch

    images = [blip.read_image(path) for path in make_images(tmp_path, 3)]
    pixels = captioner.processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        ids = captioner.model.generate(pixel_values=pixels, **captioner.generation.model_dump())
    plain = captioner.processor.batch_decode(ids, skip_special_tokens=True)
    assert captioner.caption(images) == plain


def test_a_run_captions_several_jobs_and_fails_only_the_one_with_a_bad_image(
    tiny_blip: Path, tmp_path: Path
) -> None:
    good = make_images(tmp_path / "good", 3)
    unreadable = tmp_path / "bad" / "05.png"
    mixed = [*make_images(tmp_path / "bad", 1, start=4), unreadable]
    unreadable.write_bytes(b"this is not a PNG")
    jobs = [CaptionJob(1, "alice, ", good), CaptionJob(2, "bob, ", mixed), CaptionJob(3, "c, ", [])]
    settings = CaptionSettings(model=str(tiny_blip), batch_size=2, num_beams=3, max_length=30)
    progress, started = [], []

    outcomes = run_captioner(
        jobs,
        settings,
        on_progress=lambda *args: progress.append(args),
        should_stop=lambda: False,
        on_start=started.append,
    )

    assert outcomes[1].ok and outcomes[1].error is None
    assert not outcomes[2].ok and "05.png" in outcomes[2].error
    assert outcomes[3].ok
    assert progress == [(1, 2, 3), (1, 3, 3)]
    for caption in read_captions(good):
        assert_prefixed_once(caption, "alice, ")
    assert len(started) == 1
    assert_gone(started[0])  # exited: its RAM (and GPU memory) is free again


def test_a_cancelled_run_terminates_the_child(tiny_blip: Path, tmp_path: Path) -> None:
    settings = CaptionSettings(model=str(tiny_blip))
    started = []
    with pytest.raises(CaptionCancelled):
        run_captioner(
            [CaptionJob(1, "a, ", make_images(tmp_path, 1))],
            settings,
            should_stop=lambda: bool(started),
            on_start=started.append,
        )
    assert_gone(started[0])


def test_a_missing_model_folder_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-blip"
    settings = CaptionSettings(model=str(missing))
    with pytest.raises(CaptionError, match=f"'{missing}': there is no such folder") as error:
        run_captioner([CaptionJob(1, "a, ", make_images(tmp_path, 1))], settings)
    assert "caption.model" in str(error.value)


def test_a_broken_model_folder_is_named(tiny_blip: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-blip"
    broken.mkdir()
    for path in tiny_blip.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "config.json").write_text("{ this is not json", encoding="utf-8")
    settings = CaptionSettings(model=str(broken))
    with pytest.raises(CaptionError, match=f"cannot load the BLIP model '{broken}'") as error:
        run_captioner([CaptionJob(1, "a, ", make_images(tmp_path, 1))], settings)
    assert "config.json" in str(error.value)


def fake_python(folder: Path, script: str) -> str:
    """An interpreter that runs a shell script instead of lorad.captioning.blip."""
    path = folder / "python"
    path.write_text(f"#!/bin/sh\ncat > /dev/null\n{script}\n", encoding="utf-8")
    path.chmod(0o755)
    return str(path)


def test_a_child_that_dies_midway_is_a_caption_error_with_its_stderr(tmp_path: Path) -> None:
    python = fake_python(
        tmp_path,
        """echo '{"event": "job_done", "job": 1, "warnings": []}'
        echo 'Segmentation fault' >&2
        exit 139""",
    )
    settings = CaptionSettings(model="some/blip", python=python)
    jobs = [CaptionJob(job_id, "a, ", [tmp_path / "01.png"]) for job_id in (1, 2)]
    with pytest.raises(CaptionError) as error:
        run_captioner(jobs, settings)
    message = str(error.value)
    assert "'some/blip' exited with status 139 before finishing job(s) 2" in message
    assert message.endswith("its last output:\nSegmentation fault")
    assert list(error.value.outcomes) == [1] and error.value.outcomes[1].ok


def test_a_child_that_crashes_after_its_last_job_still_delivers(tmp_path: Path) -> None:
    python = fake_python(
        tmp_path,
        """echo '{"event": "job_done", "job": 1, "warnings": ["01.png: a warning"]}'
        kill -SEGV $$""",
    )
    settings = CaptionSettings(python=python)
    outcomes = run_captioner([CaptionJob(1, "a, ", [tmp_path / "01.png"])], settings)
    assert outcomes[1].ok and outcomes[1].warnings == ["01.png: a warning"]


def test_an_interpreter_that_cannot_start_is_a_caption_error(tmp_path: Path) -> None:
    settings = CaptionSettings(python=str(tmp_path / "missing-python"))
    with pytest.raises(CaptionError, match="caption.python"):
        run_captioner([CaptionJob(1, "a, ", make_images(tmp_path, 1))], settings)


def test_an_invalid_remove_phrase_fails_before_any_child_starts() -> None:
    settings = CaptionSettings(remove=["holding (a"])
    started = []
    with pytest.raises(CaptionError, match="caption.remove"):
        run_captioner([CaptionJob(1, "a, ", [Path("x.png")])], settings, on_start=started.append)
    assert started == []


def test_caption_folder_skips_images_with_captions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = make_images(tmp_path, 3)
    images[1].with_suffix(".txt").write_text("alice, my own words\n", encoding="utf-8")
    (tmp_path / "notes.jpg").write_bytes(b"")
    assert images_to_caption(tmp_path, skip_existing=False) == images
    runs = []

    def fake_run(jobs, settings, **kwargs):
        runs.append(jobs)
        return {0: lorad.captioning.client.CaptionOutcome(0, True)}

    monkeypatch.setattr(lorad.captioning.client, "run_captioner", fake_run)
    assert caption_folder(tmp_path, "alice, ", CaptionSettings()).ok
    assert runs == [[CaptionJob(0, "alice, ", [images[0], images[2]])]]


def test_the_request_keeps_its_wire_shape_and_a_malformed_one_is_told_in_one_line(
        tmp_path: Path) -> None:
    """One model for both sides: the daemon's request, as JSON, is what the docstring shows; the
    child reads it back whole and refuses a malformed one with a single fatal line."""
    settings = CaptionSettings()
    request = lorad.captioning.client.build_request(
        [CaptionJob(7, "alice, ", [tmp_path / "01.png"])], settings)
    sent = request.model_dump(mode="json")
    assert sent["jobs"] == [{"job": 7, "prefix": "alice, ", "images": [str(tmp_path / "01.png")]}]
    assert sent["generation"] == {"num_beams": 9, "min_length": 15, "max_length": 75,
                                  "no_repeat_ngram_size": 3}
    assert Request.read(json.loads(json.dumps(sent))) == request
    child = subprocess.run([sys.executable, "-m", "lorad.captioning.blip"],
                           input='{"model": "m", "jobs": [{"job": "x"}]}',
                           capture_output=True, text=True, check=False)
    assert child.returncode == blip.FATAL_EXIT
    [line] = child.stdout.splitlines()
    fatal = json.loads(line)
    assert fatal["event"] == "fatal"
    assert fatal["error"].startswith("lorad.captioning.blip: unusable request on stdin "
                                     "(unusable Request: device: Field required; ")
    assert "jobs.0.job: Input should be a valid integer" in fatal["error"]


def test_a_malformed_event_is_a_caption_error_that_names_it(tmp_path: Path) -> None:
    python = fake_python(tmp_path, """echo '{"event": "job_done", "warnings": []}'""")
    settings = CaptionSettings(python=python)
    with pytest.raises(CaptionError, match=r"sent an unusable JobDone: job: Field required$"):
        run_captioner([CaptionJob(1, "a, ", [tmp_path / "01.png"])], settings)
