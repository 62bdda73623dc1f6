"""kohya_ss GUI configuration files mapped onto Kohya arguments the way the GUI maps them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lorad.training.kohya.args import check_args, merge, to_argv
from lorad.training.kohya.gui_preset import GuiPresetError, load_gui_preset
from lorad.training.kohya.presets import load_preset

GUI_SD15 = Path(__file__).parent / "data" / "kohya" / "gui_sd15.json"


def write_variant(tmp_path: Path, **changes: Any) -> Path:
    data = json.loads(GUI_SD15.read_text(encoding="utf-8"))
    data.update(changes)
    path = tmp_path / "preset.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_gui_file_maps_renamed_fields_onto_kohya_arguments() -> None:
    preset = load_gui_preset(GUI_SD15)
    args = preset.args
    assert preset.family == "sd15"
    assert args["network_module"] == "networks.lora"
    assert args["optimizer_type"] == "AdamW8bit"
    assert args["resolution"] == 512
    assert (args["sdpa"], args["xformers"]) == (True, False)
    assert args["optimizer_args"] == ["weight_decay=0.01", "betas=0.9,0.999"]
    assert (args["network_dim"], args["network_alpha"]) == (32, 16.0)
    assert (args["unet_lr"], args["text_encoder_lr"]) == (1e-4, 5e-5)
    assert args["clip_skip"] == 1 and args["seed"] == 1234
    assert args["bucket_reso_steps"] == 64 and args["bucket_no_upscale"] is True
    assert args["min_snr_gamma"] == 5.0 and args["noise_offset"] == 0.05
    assert args["sample_every_n_steps"] == 100 and args["sample_sampler"] == "euler_a"
    assert args["mixed_precision"] == "fp16" and args["save_precision"] == "fp16"


def test_gui_zeros_and_blanks_mean_unset_as_in_the_gui() -> None:
    args = load_gui_preset(GUI_SD15).args
    # present but unset: None, so that merging over lorad's preset gives Kohya's default
    for name in ("keep_tokens", "sample_every_n_epochs", "lr_scheduler_num_cycles",
                 "vae_batch_size", "caption_dropout_rate", "lr_warmup_steps", "network_args"):
        assert args[name] is None, name
    # the GUI passes a U-Net or text-encoder rate instead of learning_rate
    assert args["learning_rate"] is None
    # ... but 0 data-loader workers is a real setting (load in the main process)
    assert args["max_data_loader_n_workers"] == 0
    # 75 tokens is Kohya's default, not one of its choices
    assert args["max_token_length"] is None


def test_gui_file_over_lorads_preset_gives_a_command_kohya_accepts() -> None:
    merged = merge(load_preset("sd15"), load_gui_preset(GUI_SD15).args)
    assert check_args(merged, "sd15") == []
    assert "sample_every_n_epochs" not in merged  # so the GUI's every-100-steps sampling applies
    assert merged["caption_extension"] == ".txt"  # the GUI's ".caption" was ignored
    argv = to_argv(merged)
    assert "--sdpa" in argv and "--xformers" not in argv


def test_ignored_gui_fields_are_noted_by_name() -> None:
    notes = load_gui_preset(GUI_SD15).notes
    assert "ignored GUI-only key 'num_cpu_threads_per_process'" in notes
    assert "ignored GUI-only key 'model_list'" in notes
    assert "ignored key 'pretrained_model_name_or_path': lorad sets this itself" in notes
    assert "ignored key 'caption_extension': lorad sets this itself" in notes
    # empty fields lose nothing by being ignored and are not noted
    assert not [note for note in notes if "'huggingface_token'" in note or "'resume'" in note]


def test_gui_epochs_are_noted_because_the_subject_decides_them(tmp_path: Path) -> None:
    preset = load_gui_preset(write_variant(tmp_path, epoch=10, max_train_epochs=12))
    assert "max_train_epochs" not in preset.args
    assert [n for n in preset.notes if "subject's epochs" in n] == [
        f"ignored key {key!r}: lorad trains the subject's epochs (lora.toml's epochs, else its "
        "model family's preset: 6 for SD1.5, 16 for SDXL)" for key in ("epoch", "max_train_epochs")]


@pytest.mark.parametrize(("saved_sdxl", "model_family", "said"), [
    (False, "sdxl", "saved for SD1.5 (sdxl = false), but the base model it is used with is SDXL"),
    (True, "sd15", "saved for SDXL (sdxl = true), but the base model it is used with is SD1.5"),
])
def test_a_file_for_the_other_model_family_is_refused(tmp_path: Path, saved_sdxl: bool,
                                                     model_family: str, said: str) -> None:
    path = write_variant(tmp_path, sdxl=saved_sdxl, max_resolution="1024,1024")
    with pytest.raises(GuiPresetError) as raised:
        load_gui_preset(path, model_family)
    assert str(raised.value).startswith(f"{path}: key 'sdxl': the file was {said}")
    own_family = "sdxl" if saved_sdxl else "sd15"
    assert load_gui_preset(path, own_family).family == own_family  # its own family is fine


def test_a_file_without_the_sdxl_field_follows_the_models_family(tmp_path: Path) -> None:
    data = json.loads(GUI_SD15.read_text(encoding="utf-8"))
    del data["sdxl"]
    path = tmp_path / "no-family.json"
    path.write_text(json.dumps({**data, "sdxl_no_half_vae": True}), encoding="utf-8")
    assert load_gui_preset(path, "sdxl").args["no_half_vae"] is True
    assert load_gui_preset(path, "sd15").args["no_half_vae"] is None


def test_unknown_fields_are_noted_not_refused(tmp_path: Path) -> None:
    preset = load_gui_preset(write_variant(tmp_path, new_field_2027=3, save_as_bool=True))
    assert "ignored unknown key 'new_field_2027'" in preset.notes
    assert "ignored GUI-only key 'save_as_bool'" in preset.notes


@pytest.mark.parametrize(
    ("key", "value"),
    [("additional_parameters", "--network_train_unet_only"),
     ("extra_accelerate_launch_args", "--gpu_ids 1"),
     ("network_weights", "/home/ana/old.safetensors"),
     ("reg_data_dir", "/home/ana/reg"),
     ("dataset_config", "/home/ana/dataset.toml"),
     ("vae", "/home/ana/vae.safetensors"),
     ("optimizer_args", "weight_decay=0.1 --resume /tmp/x"),
     ("lr_scheduler_args", "T_max"),
     ("LoRA_type", "LyCORIS/LoHa"),
     ("optimizer", "mypackage.MyOptimizer"),
     ("v2", True),
     ("mixed_precision", "fp8"),
     ("max_resolution", "512x512"),
     ("seed", "random")],
)
def test_unsafe_or_unusable_fields_are_refused_naming_file_and_key(
    tmp_path: Path, key: str, value: Any
) -> None:
    path = write_variant(tmp_path, **{key: value})
    with pytest.raises(GuiPresetError) as raised:
        load_gui_preset(path)
    assert str(path) in str(raised.value)
    assert repr(key) in str(raised.value)


def test_lr_warmup_is_a_percentage_passed_as_a_ratio(tmp_path: Path) -> None:
    assert load_gui_preset(write_variant(tmp_path, lr_warmup=10)).args["lr_warmup_steps"] == 0.1
    newer = write_variant(tmp_path, lr_warmup=10, lr_warmup_steps=250)
    assert load_gui_preset(newer).args["lr_warmup_steps"] == 250


def test_xformers_choice_and_old_boolean_form(tmp_path: Path) -> None:
    args = load_gui_preset(write_variant(tmp_path, xformers="xformers")).args
    assert (args["xformers"], args["sdpa"]) == (True, False)
    args = load_gui_preset(write_variant(tmp_path, xformers=False)).args
    assert (args["xformers"], args["sdpa"]) == (False, False)


def test_unequal_resolution_keeps_both_sides(tmp_path: Path) -> None:
    args = load_gui_preset(write_variant(tmp_path, max_resolution="512,768")).args
    assert args["resolution"] == "512,768"


def test_a_zero_text_encoder_rate_trains_the_unet_only_like_the_gui(tmp_path: Path) -> None:
    args = load_gui_preset(write_variant(tmp_path, text_encoder_lr=0)).args
    assert args["text_encoder_lr"] is None
    assert args["network_train_unet_only"] is True
    args = load_gui_preset(write_variant(tmp_path, unet_lr=0, text_encoder_lr=0)).args
    assert args["learning_rate"] == 1e-4
    assert args["unet_lr"] is None and args["network_train_unet_only"] is False


def test_kohya_locon_and_dropouts_become_network_args(tmp_path: Path) -> None:
    path = write_variant(tmp_path, LoRA_type="Kohya LoCon", conv_dim=8, conv_alpha=4,
                         rank_dropout=0.1, down_lr_weight="1,1,1,1,1,1,1,1,1,1,1,1")
    args = load_gui_preset(path).args
    assert args["network_module"] == "networks.lora"
    assert args["network_args"] == ["down_lr_weight=1,1,1,1,1,1,1,1,1,1,1,1", "rank_dropout=0.1",
                                    "conv_dim=8", "conv_alpha=4"]


def test_sdxl_fields_only_for_an_sdxl_file(tmp_path: Path) -> None:
    sdxl = load_gui_preset(write_variant(tmp_path, sdxl=True, max_resolution="1024,1024"))
    assert sdxl.family == "sdxl"
    assert sdxl.args["no_half_vae"] is True and sdxl.args["resolution"] == 1024
    sd15 = load_gui_preset(GUI_SD15)
    assert sd15.args["no_half_vae"] is None  # sdxl_no_half_vae is set, but the file is SD1.5


def test_noise_settings_follow_the_chosen_noise_type(tmp_path: Path) -> None:
    args = load_gui_preset(write_variant(tmp_path, noise_offset_type="Multires",
                                         multires_noise_iterations=6)).args
    assert args["noise_offset"] is None
    assert (args["multires_noise_iterations"], args["multires_noise_discount"]) == (6, 0.3)


def test_files_that_are_not_gui_json_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(GuiPresetError, match="JSON object"):
        load_gui_preset(path)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(GuiPresetError, match="not a JSON file"):
        load_gui_preset(path)
    with pytest.raises(GuiPresetError, match="cannot read"):
        load_gui_preset(tmp_path / "missing.json")


def test_warmup_is_dropped_for_the_constant_scheduler(tmp_path: Path) -> None:
    preset = load_gui_preset(write_variant(tmp_path, lr_scheduler="constant", lr_warmup="10"))
    assert preset.args["lr_warmup_steps"] is None
    assert "ignored key 'lr_warmup': the constant scheduler has no warmup" in preset.notes
