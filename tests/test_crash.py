"""The crash test under pytest: ten folders, twenty SIGKILLs over every stage, nothing lost.

The seed comes from LORAD_CRASH_SEED, else a new one; it is printed, so that a failure can be
reproduced with `python -m tests.crashtest --seed N`.
"""

from __future__ import annotations

import os
import random

from tests import crashtest


def test_killing_the_daemon_anywhere_loses_doubles_and_restarts_nothing(tmp_path, tiny_blip):
    seed = int(os.environ.get("LORAD_CRASH_SEED") or random.randrange(10**6))
    outcome = crashtest.run(tmp_path / "rig", tiny_blip, seed, folders=10, kills=20)
    print(outcome.summary())
    assert len(outcome.kills) == 20
    hit = {stage for kill in outcome.kills for stage in kill.hit}
    assert {"settling", "preparing", "captioning", "training", "notifying"} <= hit, \
        outcome.summary()
    assert not outcome.problems, outcome.summary()
