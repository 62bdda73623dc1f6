"""Shared fixtures: a daemon configuration on temporary folders, the stand-in Kohya, a tiny BLIP,
generated photos and a loopback notification endpoint."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.configs import dump_toml, merge
from tests.hook import Hook

TESTS = Path(__file__).parent
SD_SCRIPTS = TESTS / "sd_scripts"


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.blipfixture import build_tiny_blip

    folder = tmp_path_factory.mktemp("tiny-blip")
    build_tiny_blip(folder)
    return folder


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.close()


@pytest.fixture
def fake_trainer(tmp_path: Path) -> Callable[..., Path]:
    """Write the stand-in trainer's control file; returns its path (set FAKE_SD_SCRIPTS to it)."""
    control = tmp_path / "fake-sd-scripts.json"

    def write(**settings: Any) -> Path:
        control.write_text(json.dumps(settings))
        return control

    write()
    return write


@pytest.fixture
def config(tmp_path: Path, tiny_blip: Path, fake_trainer: Callable[..., Path],
           monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """A lorad.toml on temporary folders; call it with overrides (nested dicts merge)."""
    model = tmp_path / "models" / "base-sd15.safetensors"
    model.parent.mkdir()
    model.write_bytes(b"stand-in base model")
    (tmp_path / "models" / "base-sdxl.safetensors").write_bytes(b"stand-in base model")
    monkeypatch.setenv("FAKE_SD_SCRIPTS", str(fake_trainer()))
    for name in list(__import__("os").environ):
        if name.startswith("LORAD_"):
            monkeypatch.delenv(name)

    def write(**overrides: Any) -> Path:
        data: dict[str, Any] = {
            "inbox": str(tmp_path / "inbox"),
            "outbox": str(tmp_path / "outbox"),
            "state_dir": str(tmp_path / "state"),
            "default_model": "sd15",
            "watch": {"settle_seconds": 0.5, "rescan_seconds": 2.0},
            "prepare": {"min_images": 3, "few_images": 3},
            "caption": {"model": str(tiny_blip), "device": "cpu", "num_beams": 2,
                        "min_length": 3, "max_length": 10},
            "kohya": {"sd_scripts": str(SD_SCRIPTS), "python": sys.executable,
                      "accelerate": False, "stall_minutes": 1.0, "stop_grace_seconds": 5.0},
            "models": {
                "sd15": {"path": str(model), "family": "sd15"},
                "sdxl": {"path": str(tmp_path / "models" / "base-sdxl.safetensors"),
                         "family": "sdxl"},
            },
            "notify": {"retry_seconds": [0.5, 1.0]},
        }
        path = tmp_path / "lorad.toml"
        path.write_text(dump_toml(merge(data, overrides)))
        return path

    return write
