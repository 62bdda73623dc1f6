"""The prepare stage of the daemon: lora.toml's choices applied to the dataset checks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lorad.dataset import stage as prepare
from lorad.dataset.protocol import parse_event
from lorad.errors import Rejected
from tests.jobs import context
from tests.photos import make_photos


def dropped_job(ctx, name: str, seed: int, lora_toml: str = "") -> int:
    """A job claimed from the inbox: its folder of 3 photos is in work/<id>/source."""
    job_id = ctx.store.create_job(name, state="preparing", stage="prepare")
    source = ctx.settings.job_dir(job_id) / "source"
    make_photos(source, 3, size=(320, 320), seed=seed)
    if lora_toml:
        (source / "lora.toml").write_text(lora_toml)
    return job_id


def test_strict_in_lora_toml_turns_a_dataset_warning_into_a_rejection(config):
    """Three photos draw the count warning (prepare.few_images = 3 here): reported for a
    lenient subject, a refusal for one whose lora.toml says strict = true."""
    ctx = context(config())
    assert ctx.settings.prepare.strict is False
    lenient = dropped_job(ctx, "lenient", seed=1)
    strict = dropped_job(ctx, "stern", seed=2, lora_toml="strict = true\n")

    prepare.run(ctx, ctx.store.get(lenient))
    warnings = [e.message for e in ctx.store.events(lenient) if e.level == "warning"]
    assert any("only 3 images" in line for line in warnings)

    with pytest.raises(Rejected) as refused:
        prepare.run(ctx, ctx.store.get(strict))
    message = str(refused.value)
    assert message.startswith("The dataset cannot be used: strict mode is on")
    assert "only 3 images" in message


def test_a_malformed_request_or_event_is_told_in_one_line():
    """Both sides read the protocol's messages through its models: what does not fit is named."""
    child = subprocess.run([sys.executable, "-m", "lorad.dataset.child"], input='{"token": 1}',
                           capture_output=True, text=True, check=False)
    assert child.returncode == 1
    [line] = child.stdout.splitlines()
    error = json.loads(line)["error"]
    assert error.startswith("lorad.dataset.child: unusable request on stdin (unusable "
                            "PrepareRequest: source: Field required; ")
    assert "token: Input should be a valid string" in error and "\n" not in error
    with pytest.raises(ValueError, match=r"^unusable Progress: total: Field required$"):
        parse_event({"event": "progress", "done": 1})
    assert parse_event({"event": "something new"}) is None


def test_error_txt_names_only_what_is_beside_it_and_counts_each_problem_once(config):
    """A refused folder's error.txt: the first problem, "(and N more problems)" followed by those
    N lines, and the full check as lorad-report.json in the same folder."""
    from lorad.daemon.outcome import conclude

    ctx = context(config())
    job_id = dropped_job(ctx, "stern", seed=2, lora_toml="strict = true\n")
    source = ctx.settings.job_dir(job_id) / "source"
    (source / "broken.jpg").write_bytes(b"not a jpeg")
    (source / "empty.png").write_bytes(b"")
    with pytest.raises(Rejected) as refused:
        prepare.run(ctx, ctx.store.get(job_id))
    conclude(ctx, ctx.store.get(job_id), "prepare", refused.value)
    failed = ctx.settings.failed_dir / "stern"
    note = (failed / "error.txt").read_text()
    first, *others = str(refused.value).splitlines()
    assert f"(and {len(others)} more problems)" in first and len(others) >= 3
    for line in [first, *others]:
        assert note.count(line) == 1
    assert "report.json" not in note.replace("lorad-report.json", "")
    assert "lorad-report.json, beside this file" in note
    report = json.loads((failed / "lorad-report.json").read_text())
    assert report["usable"] is False
    assert {f["source"] for f in report["files"]} >= {"broken.jpg", "empty.png"}
