"""A subject's epochs: lora.toml's, else its model family's preset's (SD1.5 6, SDXL 16)."""

from __future__ import annotations

import pytest

from lorad.settings import load_settings
from lorad.subject import load_subject


@pytest.fixture
def settings(tmp_path):
    path = tmp_path / "lorad.toml"
    path.write_text('inbox = "/srv/in"\noutbox = "/srv/out"\nstate_dir = "/s"\n'
                    '[models.sd15]\npath = "/m"\nfamily = "sd15"\n'
                    '[models.xl]\npath = "/x"\nfamily = "sdxl"\n')
    return load_settings(path)


@pytest.mark.parametrize(("lora_toml", "epochs"), [
    ('model = "sd15"\n', 6),
    ('model = "xl"\n', 16),
    ('model = "xl"\nepochs = 4\n', 4),
    ('model = "xl"\n[train]\nepochs = 5\n', 5),
])
def test_epochs_default_to_the_model_familys_preset(tmp_path, settings, lora_toml, epochs):
    folder = tmp_path / "Alice"
    folder.mkdir()
    (folder / "lora.toml").write_text(lora_toml)
    loaded = load_subject(folder, settings)
    assert loaded.epochs == loaded.total_epochs == epochs
