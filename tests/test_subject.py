"""lora.toml: strict, typed, bounded; a bad one names the file, the key and what was expected."""

from __future__ import annotations

import pytest
from badsubjects import BAD_LORA_TOML

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


@pytest.mark.parametrize("kind", sorted(BAD_LORA_TOML))
def test_a_bad_lora_toml_is_refused_naming_the_file_and_the_key(tmp_path, settings, kind):
    data, expected = BAD_LORA_TOML[kind]
    folder = subject(tmp_path, None)
    (folder / "lora.toml").write_bytes(data)
    with pytest.raises(SubjectError) as error:
        load_subject(folder, settings)
    message = str(error.value)
    assert expected in message
    assert "lora.toml" in message


def test_train_overrides_are_typed_and_kept(tmp_path, settings):
    loaded = load_subject(subject(tmp_path, '[train]\nnetwork_alpha = 16\nflip_aug = true\n'
                                            'epochs = 8\n'), settings)
    assert loaded.train.set_values() == {"network_alpha": 16.0, "flip_aug": True}
    assert loaded.total_epochs == 8


@pytest.mark.parametrize(("lora_toml", "epochs"), [
    ('model = "sd15"\n', 6),
    ('model = "sdxl"\n', 16),
    ('model = "sdxl"\nepochs = 4\n', 4),
    ('model = "sdxl"\n[train]\nepochs = 5\n', 5),
])
def test_epochs_default_to_the_model_familys_preset(tmp_path, settings, lora_toml, epochs):
    loaded = load_subject(subject(tmp_path, lora_toml), settings)
    assert loaded.epochs == loaded.total_epochs == epochs
