"""examples/: the daemon configuration and both lora.toml files load, and say what they claim."""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel

from lorad.settings import Settings, load_settings
from lorad.subject import load_subject
from lorad.training.kohya.presets import load_preset

EXAMPLES = Path(__file__).parent.parent / "examples"
LORAD_TOML = EXAMPLES / "lorad.toml"
HEADER = re.compile(r"^\[([\w.]+)\]")
KEY = re.compile(r"^(\w+)\s*=")


@pytest.fixture(autouse=True)
def _no_lorad_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LORAD_"):
            monkeypatch.delenv(name)


def written_keys(text: str) -> set[str]:
    """Every key the file shows, set or commented out, as a dotted path ("caption.model")."""
    keys, table = set(), ""
    for line in text.splitlines():
        line = line.strip().removeprefix("#").strip()
        if header := HEADER.match(line):
            table = header.group(1)
            keys.add(table)
        elif key := KEY.match(line):
            keys.add(f"{table}.{key.group(1)}" if table else key.group(1))
    return keys


def settings_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every key of a settings model, as dotted paths; a table of names (`models`) as
    `models.*`, whose keys any one of its tables may show."""
    keys = set()
    for name, field in model.model_fields.items():
        path, annotation = prefix + name, field.annotation
        if get_origin(annotation) is dict:
            value = get_args(annotation)[1]
            if isinstance(value, type) and issubclass(value, BaseModel):
                keys |= settings_keys(value, f"{path}.*.")
            else:
                keys.add(path)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= settings_keys(annotation, f"{path}.")
        else:
            keys.add(path)
    return keys


def shown(key: str, written: set[str]) -> bool:
    pattern = re.compile(re.escape(key).replace(r"\*", r"[\w]+") + "$")
    return any(pattern.match(path) for path in written)


def test_the_example_configuration_loads():
    settings = load_settings(LORAD_TOML)
    assert set(settings.models) == {"sd15", "sdxl"}
    assert settings.default_model in settings.models


def test_the_example_configuration_shows_every_key():
    written = written_keys(LORAD_TOML.read_text())
    missing = sorted(key for key in settings_keys(Settings) if not shown(key, written))
    assert missing == [], f"examples/lorad.toml does not show {missing}"


def test_the_example_configuration_writes_the_true_defaults():
    """A key written with a value in the example has the value lorad would use without it,
    except the keys every installation sets for itself."""
    own = {"inbox", "outbox", "state_dir", "models", "kohya"}
    data = tomllib.loads(LORAD_TOML.read_text())
    defaults = Settings(inbox=Path("/i"), outbox=Path("/o"), state_dir=Path("/s")).model_dump(
        mode="json")
    for table, values in data.items():
        if table in own:
            continue
        if not isinstance(values, dict):
            assert values == defaults[table], table
            continue
        for key, value in values.items():
            assert value == defaults[table][key], f"{table}.{key}"


@pytest.mark.parametrize("example", ["lora-sd15.toml", "lora-sdxl.toml"])
def test_each_subject_example_is_a_valid_lora_toml_for_the_example_daemon(tmp_path, example):
    folder = tmp_path / "subject"
    folder.mkdir()
    shutil.copyfile(EXAMPLES / example, folder / "lora.toml")
    subject = load_subject(folder, load_settings(LORAD_TOML))
    assert subject.model in ("sd15", "sdxl") and subject.token


def preset_value(preset: dict[str, Any], key: str) -> Any:
    if key == "weight_decay":  # the preset passes it as an optimizer argument
        [value] = [a.split("=", 1)[1] for a in preset["optimizer_args"] if a.startswith(key)]
        return float(value)
    return preset[key]


def test_the_sdxl_example_holds_the_sdxl_presets_own_values():
    """Its header says so: the [train] values and epochs are the preset's, written out."""
    example = tomllib.loads((EXAMPLES / "lora-sdxl.toml").read_text())
    preset = load_preset("sdxl")
    assert example["epochs"] == preset["max_train_epochs"]
    for key, value in example["train"].items():
        assert value == preset_value(preset, key), f"[train] {key}"
