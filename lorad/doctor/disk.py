"""Disk space: what is free in state_dir and the outbox against what one training leaves there."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

from lorad.doctor.check import FAIL, FAMILY_NAMES, GB, OK, WARN, Check, existing, largest_family
from lorad.settings import Settings

# What one training leaves in state_dir and the outbox, by base-model family. Assumed: the
# presets' epochs (6 for SD1.5, 16 for SDXL) of a network_dim 32 LoRA, each epoch with the
# training state Kohya saves beside it (weights in fp32 and the optimizer's moments), plus the
# dataset; the outbox gets every epoch and the samples.
TRAINING_NEEDS_GB = {"sd15": (2.0, 0.5), "sdxl": (15.0, 4.0)}
NO_SPACE_GB = 1.0  # under this, not even a dataset can be prepared


def disk_space(settings: Settings) -> Iterator[Check]:
    family = largest_family(settings)
    state_need, outbox_need = TRAINING_NEEDS_GB[family]
    state, outbox = existing(settings.state_dir), existing(settings.outbox)
    if state.stat().st_dev == outbox.stat().st_dev:
        yield space(f"state_dir and outbox (one filesystem, {state})", state,
                    state_need + outbox_need, family)
        return
    yield space(f"state_dir ({settings.state_dir})", state, state_need, family)
    yield space(f"outbox ({settings.outbox})", outbox, outbox_need, family)


def space(what: str, path: Path, need: float, family: str) -> Check:
    free = shutil.disk_usage(path).free / GB
    found = (f"{free:.1f} GB free for {what}, where one {FAMILY_NAMES[family]} training needs "
             f"about {need:g} GB (assumed: the preset's epochs of a network_dim 32 LoRA, each with "
             "its saved training state)")
    if free < NO_SPACE_GB:
        return Check(FAIL, "disk space", f"{found}; free some space before starting lorad")
    if free < need:
        return Check(WARN, "disk space", f"{found}; free some space, or a training may stop "
                                         "with a full disk")
    return Check(OK, "disk space", found)
