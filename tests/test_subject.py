"""lora.toml: strict, typed, bounded; a bad one names the file, the key and what was expected."""

from __future__ import annotations

import pytest

from lorad.settings import load_settings
from lorad.subject import SubjectError, load_subject, token_from_name


@pytest.fixture
def settings(tmp_path):
    path = tmp_path / "lorad.toml"
    path.write_text('inbox = "/srv/in"\noutbox = "/srv/out"\nstate_dir = "/s"\n'
                    '[models.sd15]\npath = "/m"\nfamily = "sd15"\n'
                    '[models.sdxl]\npath = "/x"\nfamily = "sdxl"\n')
    return load_settings(path)


def subject(tmp_path, text: str | None, name: str = "Alice Smith"):
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    if text is not None:
        (folder / "lora.toml").write_text(text)
    return folder


def test_without_lora_toml_the_defaults_apply(tmp_path, settings):
    loaded = load_subject(subject(tmp_path, None), settings)
    assert (loaded.token, loaded.model, loaded.total_epochs) == ("alice_smith", "sd15", 6)
    assert loaded.prefix == "alice_smith, "
    assert loaded.prompts() == ["photo of alice_smith"]
    assert loaded.repeats_for(20) == 20 and loaded.repeats_for(800) == 1


@pytest.mark.parametrize("name, token", [
    ("Zoë Saldaña", "zoe_saldana"), ("  my--LoRA!! ", "my_lora"), ("ab", None), ("日本", None)])
def test_tokens_are_derived_from_folder_names_or_not_at_all(name, token):
    assert token_from_name(name) == token


def test_a_folder_name_without_a_usable_token_asks_for_one(tmp_path, settings):
    with pytest.raises(SubjectError, match="set token = "):
        load_subject(subject(tmp_path, None, name="日本"), settings)


@pytest.mark.parametrize("text, expected", [
    ('token = "../../etc"', "token: '../../etc' is not a usable token"),
    ('token = "a; rm -rf /"', "is not a usable token"),
    ('token = "' + "x" * 10_000 + '"', "is not a usable token"),
    ('model = "/models/x.safetensors"', "looks like a path"),
    ('model = "flux"', "model 'flux' is not a base model of this daemon (known: sd15, sdxl)"),
    ('epochs = "6"', "epochs: Input should be a valid integer"),
    ('epochs = 0', "epochs: Input should be greater than or equal to 1"),
    ('repeats = -3', "repeats"),
    ('colour = "red"', "unknown key 'colour' in the top level"),
    ('[train]\nnetwork_dim = 99999', "train.network_dim"),
    ('[train]\noptimizer_type = "Adam9000"', "train.optimizer_type"),
    ('[train]\nadditional_parameters = "--foo"', "unknown key 'train.additional_parameters'"),
    ('[train]\noutput_dir = "/tmp"', "unknown key 'train.output_dir'"),
    ('sample_prompts = ["photo of x --w 99999"]', "has a '--' option"),
    ('epochs = 3\n[train]\nepochs = 4', "epochs is set twice"),
    ('token = ', "not valid TOML"),
    ('notify_tags = ["a b"]', "notify_tags"),
])
def test_a_bad_lora_toml_is_refused_naming_the_key(tmp_path, settings, text, expected):
    with pytest.raises(SubjectError) as error:
        load_subject(subject(tmp_path, text), settings)
    message = str(error.value)
    assert expected in message
    assert "lora.toml" in message or "default_model" in message


def test_train_overrides_are_typed_and_kept(tmp_path, settings):
    loaded = load_subject(subject(tmp_path, '[train]\nnetwork_alpha = 16\nflip_aug = true\n'
                                            'epochs = 8\n'), settings)
    assert loaded.train.set_values() == {"network_alpha": 16.0, "flip_aug": True}
    assert loaded.total_epochs == 8
