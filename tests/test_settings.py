"""lorad.toml and LORAD_* variables: typos are errors that name the key; overlaps are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorad.settings import ConfigError, load_settings

BASE = 'inbox = "/srv/in"\noutbox = "/srv/out"\nstate_dir = "/var/lib/lorad"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lorad.toml"
    path.write_text(BASE + text)
    return path


def test_defaults_fill_what_the_file_leaves_out(tmp_path, monkeypatch):
    settings = load_settings(write(tmp_path, ""))
    assert settings.failed == Path("/var/lib/lorad/failed")
    assert (settings.caption.num_beams, settings.caption.min_length,
            settings.caption.batch_size) == (9, 15, 4)
    assert settings.caption.model == "Salesforce/blip-image-captioning-large"


def test_environment_variables_override_the_file_with_nesting(tmp_path, monkeypatch):
    path = write(tmp_path, '[caption]\nmodel = "from-file"\n[models.sd15]\npath = "/m"\n'
                           'family = "sd15"\n')
    monkeypatch.setenv("LORAD_CAPTION__MODEL", "from-env")
    monkeypatch.setenv("LORAD_MODELS__SD15__PATH", "/other")
    settings = load_settings(path)
    assert settings.caption.model == "from-env"
    assert settings.models["sd15"].path == "/other"


@pytest.mark.parametrize("text, named", [
    ("colour = 1\n", "'colour'"),
    ("[caption]\nmodle = 'x'\n", "'caption.modle'"),
    ("[models.sd15]\npath = '/m'\nfamily = 'sd15'\nweight = 1\n", "'models.sd15.weight'"),
    ("[watch]\nsettle = 3\n", "'watch.settle'"),
])
def test_an_unknown_key_anywhere_is_an_error_naming_it(tmp_path, text, named):
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, text))
    assert named in str(error.value) and "lorad.toml" in str(error.value)


def test_an_unknown_lorad_variable_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAD_INBXO", "/x")
    with pytest.raises(ConfigError, match="LORAD_INBXO"):
        load_settings(write(tmp_path, ""))


@pytest.mark.parametrize("name, wrong", [
    ("LORAD_CAPTION__MODLE", "'modle'"),
    ("LORAD_MODELS__SD15__WEIGHT", "'weight'"),
    ("LORAD_INBOX__PATH", "'path'"),
])
def test_a_misspelled_nested_variable_is_blamed_on_the_variable_not_the_file(
        tmp_path, monkeypatch, name, wrong):
    monkeypatch.setenv(name, "x")
    path = write(tmp_path, '[models.sd15]\npath = "/m"\nfamily = "sd15"\n')
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    message = str(error.value)
    assert message.startswith(f"environment variable {name}: no configuration key")
    assert wrong in message and "unknown key" not in message


def test_nested_variables_that_name_real_keys_are_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAD_KOHYA__ENV__HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LORAD_WATCH__SETTLE_SECONDS", "3")
    settings = load_settings(write(tmp_path, ""))
    assert list(settings.kohya.env.values()) == ["1"]
    assert settings.watch.settle_seconds == 3.0


def test_trainer_variables_from_the_environment_keep_their_names_case(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAD_KOHYA__ENV__HF_HUB_OFFLINE", "1")
    settings = load_settings(write(tmp_path, '[kohya.env]\nTRANSFORMERS_OFFLINE = "1"\n'))
    assert settings.kohya.env == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.mark.parametrize("text, message", [
    ('failed = "/srv/in/failed"\n', "failed (/srv/in/failed) is inside the inbox"),
    ('[caption]\ndevice = "gpu"\n', "caption.device"),
    ('[caption]\nmin_length = 80\n', "min_length (80) is larger than max_length (75)"),
    ('gpus = []\n', "gpus"),
    ('default_model = "sdxl"\n[models.sd15]\npath = "/m"\nfamily = "sd15"\n',
     "default_model 'sdxl' is not one of the [models] tables"),
    ('[models.x]\npath = "/m"\nfamily = "sd3"\n', "models.x.family"),
])
def test_values_that_cannot_work_are_refused_with_the_reason(tmp_path, text, message):
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, text))
    assert message in str(error.value)


def test_outbox_inside_the_inbox_is_refused(tmp_path):
    path = tmp_path / "lorad.toml"
    path.write_text('inbox = "/srv/in"\noutbox = "/srv/in/out"\nstate_dir = "/s"\n')
    with pytest.raises(ConfigError, match=r"outbox \(/srv/in/out\) is inside the inbox"):
        load_settings(path)


def test_a_missing_required_key_says_how_to_set_it(tmp_path):
    path = tmp_path / "lorad.toml"
    path.write_text('inbox = "/srv/in"\nstate_dir = "/s"\n')
    with pytest.raises(ConfigError, match="'outbox' is required.*LORAD_OUTBOX"):
        load_settings(path)


def test_broken_toml_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="lorad.toml"):
        load_settings(write(tmp_path, "[caption\n"))
