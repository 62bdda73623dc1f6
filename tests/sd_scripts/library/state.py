"""Accelerate's training state folders (--save_state, --resume) with Kohya's train_state.json.

A state folder holds model.safetensors, optimizer.bin, scheduler.bin, random_states_0.pkl and
train_state.json `{"current_epoch": E, "current_step": S}`. Kohya writes the step counter of the
run that saved it, which restarts at 0 in a resumed run.
"""

import json
import os
import pickle
import random

STATE_FILES = ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl")


def save(folder: str, model: bytes, epoch: int, step: int) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "model.safetensors"), "wb") as f:
        f.write(model)
    for name, content in (
        ("optimizer.bin", {"state": {}, "param_groups": [{"step": step}]}),
        ("scheduler.bin", {"last_epoch": step}),
        ("random_states_0.pkl", {"random_state": random.getstate(), "step": step}),
    ):
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(content, f)
    with open(os.path.join(folder, "train_state.json"), "w", encoding="utf-8") as f:
        json.dump({"current_epoch": epoch, "current_step": step}, f)


def load(folder: str) -> dict[str, int] | None:
    """The folder's train_state.json, or None when it has none; checks the state is complete."""
    if not os.path.isdir(folder):
        raise ValueError(f"Tried to find {folder} but folder does not exist")
    for name in STATE_FILES:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(2, "No such file or directory", path)
    train_state = os.path.join(folder, "train_state.json")
    if not os.path.exists(train_state):
        return None
    with open(train_state, encoding="utf-8") as f:
        return json.load(f)
