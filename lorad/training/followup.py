"""A follow-up training (`lorad resume`): its dataset, its starting epoch and the saved states it
may resume from, given to the new job before its first run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorad.context import Context
from lorad.delivery.branch import branch
from lorad.delivery.outbox import lineage
from lorad.errors import StageFailed
from lorad.store import Job
from lorad.system.fsutil import atomic_write_json, link_or_copy
from lorad.training.epochs import saved_states
from lorad.workspace import epoch_file_name


def seed_followup(ctx: Context, job: Job, train: dict[str, Any]) -> None:
    """Give a follow-up job its dataset, its starting epoch's weights and every saved state of
    that epoch still in the lineage's work folders; a start before the newest epoch branches
    the outbox folder (the old line's later epochs move aside)."""
    parent = ctx.store.get(job.options["resume"]["parent"])
    start = train["start_epoch"]
    paths, parent_paths = ctx.paths(job), ctx.paths(parent)
    token = job.token or ""
    outbox = Path(job.outbox_dir or "")
    if not paths.training_images.is_dir():
        _copy_dataset(parent_paths.dataset, outbox / "dataset", paths.dataset, token,
                      train.get("repeats") or parent.train.get("repeats") or 1)
    family = sorted((j for j in lineage(ctx, job) if j.id != job.id), key=lambda j: -j.id)
    name = epoch_file_name(token, start)
    candidates = [ctx.paths(j).epochs / name for j in family] + [outbox / name]
    weights = next((path for path in candidates if path.is_file()), None)
    if weights is None:
        raise StageFailed(f"the weights of epoch {start} are gone from {outbox}; pick another "
                          "epoch to resume from")
    link_or_copy(weights, paths.epochs / name)
    states = [s for j in family for s in saved_states(ctx, j, j.train) if s["epoch"] == start]
    train["inherited_states"] = states
    if states:
        ctx.store.event(job.id, f"epoch {start}'s saved state is in {Path(states[0]['path'])}: "
                                "the training continues it (optimizer and schedule included) "
                                "where the settings allow")
    else:
        ctx.store.event(job.id, f"no saved state of epoch {start} is left in the work folders; "
                                f"the training starts from its weights ({weights})")
    moved = branch(outbox, start, job.id)
    if moved is not None:
        ctx.store.event(job.id, f"resuming from epoch {start}: epochs "
                                f"{', '.join(map(str, moved.epochs))} of the earlier line moved "
                                f"to {outbox / moved.folder}")
    train["seeded"] = True


def _copy_dataset(work_dataset: Path, outbox_dataset: Path, target: Path, token: str,
                  repeats: int) -> None:
    """The parent's prepared dataset (hard links), or, if its work folder is gone, the outbox's."""
    source_dir = next(iter(sorted((work_dataset / "training_images").glob("*_*"))), None)
    if source_dir is None or not source_dir.is_dir():
        source_dir = outbox_dataset
    files = sorted(p for p in source_dir.glob("*") if p.suffix in (".png", ".txt"))
    if not any(p.suffix == ".png" for p in files):
        raise StageFailed(f"the dataset of this LoRA is gone (neither the work folder nor "
                          f"{outbox_dataset} has it); drop the photos into the inbox again")
    folder_name = source_dir.name if source_dir != outbox_dataset else f"{repeats}_{token}"
    for path in files:
        link_or_copy(path, target / "training_images" / folder_name / path.name)
    manifest = work_dataset / "manifest.json"
    if source_dir != outbox_dataset and manifest.is_file():
        link_or_copy(manifest, target / "manifest.json")
        return
    images = [{"name": p.name, "source": p.name, "user_caption": False}
              for p in files if p.suffix == ".png"]
    atomic_write_json(target / "manifest.json", {
        "token": token, "repeats": repeats, "images": images,
        "train_dir": f"training_images/{folder_name}"})
