"""Jobs made directly in a store, at a given stage, for tests of one stage at a time."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from PIL import Image

from lorad.context import Context
from lorad.settings import load_settings
from lorad.store import Store
from lorad.subject import SubjectSettings, fill_epochs
from lorad.workspace import JobPaths


def context(config_path: Path) -> Context:
    settings = load_settings(config_path)
    for folder in (settings.inbox, settings.outbox, settings.failed_dir, settings.work_dir):
        Path(folder).mkdir(parents=True, exist_ok=True)
    return Context(settings, Store(settings.db_path))


def prepared_job(ctx: Context, token: str = "alice", *, model: str = "sd15", images: int = 4,
                 subject: dict[str, Any] | None = None, stage: str = "train") -> int:
    """A job whose dataset is laid out and captioned, queued at `stage`."""
    settings = SubjectSettings.model_validate({"token": token, "model": model,
                                               **(subject or {})})
    fill_epochs(settings, ctx.settings)  # as lorad's prepare stage does
    repeats = settings.repeats_for(images)
    job_id = ctx.store.create_job(token, state="queued", stage=stage, token=token, model=model,
                                  settings=settings.model_dump(mode="json"))
    paths = JobPaths(ctx.settings.job_dir(job_id), None)
    train_dir = paths.training_images / f"{repeats}_{token}"
    train_dir.mkdir(parents=True)
    rng = random.Random(job_id)
    entries = []
    for number in range(1, images + 1):
        name = f"{token}_{number:03d}"
        colour = tuple(rng.randrange(256) for _ in range(3))
        Image.new("RGB", (64, 64), colour).save(train_dir / f"{name}.png")
        (train_dir / f"{name}.txt").write_text(f"{token}, a test photo\n")
        entries.append({"name": f"{name}.png", "source": f"p{number}.jpg",
                        "user_caption": False})
    manifest = {"token": token, "repeats": repeats, "images": entries,
                "train_dir": f"training_images/{repeats}_{token}"}
    paths.manifest.write_text(json.dumps(manifest))
    outbox = ctx.settings.outbox / token
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / "lorad-job.json").write_text(json.dumps({"root_job": job_id, "jobs": [job_id]}))
    ctx.store.update(job_id, work_dir=str(paths.root), outbox_dir=str(outbox),
                     train={"images": images, "repeats": repeats})
    return job_id


def trainer_runs(control: Path) -> list[dict[str, Any]]:
    """What the stand-in trainer was started with, one entry per run."""
    path = control.with_name(control.name + ".runs.jsonl")
    if not path.exists():
        return []
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    # Through accelerate both the launcher and the script log a line; keep the scripts'.
    return [r for r in runs if r["script"].endswith("train_network.py")]


def trainer_exits(control: Path) -> dict[int, dict[str, Any]]:
    """The stand-in trainer processes that ended by themselves (not killed by a signal), by pid."""
    path = control.with_name(control.name + ".exits.jsonl")
    if not path.exists():
        return {}
    return {e["pid"]: e for e in map(json.loads, path.read_text().splitlines()) if e}


def arg(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None
