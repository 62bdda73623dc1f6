"""kohya_ss GUI configuration files (the JSON people share) turned into Kohya arguments.

The GUI saves about 290 fields under its own names, some of them GUI-only, and turns them into
Kohya's arguments when it starts training. This module does the same for the fields whose meaning
is certain, the way the GUI does (kohya_gui/lora_gui.py, train_model):

- A value the GUI drops is "unset" here too: 0, "", false and null never reach Kohya from the GUI
  (max_data_loader_n_workers excepted). Such a key becomes None in GuiPreset.args, so that
  args.merge() removes the option from the layers below it and Kohya's default applies, as in
  the GUI.
- Renamed fields: optimizer, max_resolution, LoRA_type, xformers, lr_warmup (a percentage of all
  steps, which Kohya takes as a ratio below 1), sdxl_no_half_vae, ...
- Fields lorad sets itself (model, folders, output name, prompts, saving, epochs) are ignored with
  a note.
- A file whose sdxl checkbox does not match the base model's family is refused.
- Fields that would hand Kohya a path or free-form arguments lorad cannot check are refused.
- Fields this module does not know are ignored with a note: the GUI adds fields every release.
  (Notes are written only for ignored fields that hold a value: an empty one loses nothing.)

The tables of fields and the conversion of each value are in gui_fields.py; this module reads the
file and combines the fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from lorad.training.kohya.args import check_args
from lorad.training.kohya.gui_fields import (
    BLOCK_FIELDS,
    CONVERTERS,
    GUI_ONLY,
    KEY_VALUE,
    KNOWN_OPTIMIZERS,
    LORA_TYPES,
    LORAD_SETS,
    NETWORK_ARG_VALUE,
    REFUSED,
    SAME_NAME,
    is_set,
    number_text,
)

MAX_FILE_BYTES = 1024 * 1024


class GuiPresetError(Exception):
    """The GUI file cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class GuiPreset:
    args: dict[str, Any]  # Kohya arguments; None = unset (Kohya's default), as the GUI would
    notes: list[str]  # one line per ignored key
    family: str | None  # "sdxl" or "sd15" from the GUI's sdxl checkbox, None if the file lacks it


def load_gui_preset(path: Path, family: str | None = None) -> GuiPreset:
    """Read a kohya_ss GUI JSON file; GuiPresetError when it cannot be used safely.

    `family` is the base model's ("sd15" or "sdxl"), when known: a file whose sdxl checkbox says
    the other family is refused, and the values are checked against that family's script.
    """
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise GuiPresetError(f"{path}: cannot read it ({error.strerror or error})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise GuiPresetError(f"{path}: {len(raw)} bytes is too large for a GUI preset")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GuiPresetError(f"{path}: not a JSON file ({error})") from None
    if not isinstance(data, dict):
        raise GuiPresetError(f"{path}: expected a JSON object of GUI fields")
    return _Converter(path, data, family).convert()


@dataclass
class _Converter:
    path: Path
    data: dict[str, Any]
    model_family: str | None  # the base model's family, when known
    args: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    source: dict[str, str] = field(default_factory=dict)  # Kohya name -> GUI field
    used: set[str] = field(default_factory=set)

    def convert(self) -> GuiPreset:
        for key, reason in REFUSED.items():
            if is_set(self.data.get(key)):
                self.fail(key, f"refused: it holds {reason}")
        self.used.update(key for key in REFUSED if key in self.data)
        saved_for = self.family()
        family = saved_for or self.model_family
        for key, kind in SAME_NAME.items():
            if key in self.data:
                self.put(key, self.value(key, kind), key)
        self.network()
        self.attention()
        self.resolution()
        self.learning_rates()
        self.warmup()
        self.optimizer()
        self.noise()
        self.sdxl_fields(family == "sdxl")
        if "max_token_length" in self.data:  # 75 is Kohya's default and not one of its choices
            length = self.value("max_token_length", "int")
            self.put("max_token_length", None if length == 75 else length, "max_token_length")
        self.note_the_rest()
        self.validate(family or "sd15")
        return GuiPreset(self.args, self.notes, saved_for)

    # Reading fields

    def fail(self, key: str, problem: str) -> NoReturn:
        raise GuiPresetError(f"{self.path}: key {key!r}: {problem}")

    def value(self, key: str, kind: str) -> Any:
        """The field converted to kind ("int", "float", "bool", "word", "str"); None if unset."""
        self.used.add(key)
        raw = self.data.get(key)
        convert, expected = CONVERTERS[kind]
        if raw is None:
            return False if kind == "bool" else None
        try:
            value = convert(raw)
        except (TypeError, ValueError):
            self.fail(key, f"expected {expected}, got {raw!r}")
        if kind == "bool":
            return value
        if value in ("", 0) and key != "max_data_loader_n_workers":
            return None  # the GUI leaves out zero and empty values
        return value

    def put(self, name: str, value: Any, gui_key: str) -> None:
        self.args[name] = value
        self.source[name] = gui_key

    def family(self) -> str | None:
        if "v2" in self.data and self.value("v2", "bool"):
            self.fail("v2", "Stable Diffusion 2 models are not supported; lorad trains SD1.5 "
                            "and SDXL")
        if "sdxl" not in self.data:
            return None
        saved_for = "sdxl" if self.value("sdxl", "bool") else "sd15"
        expected = self.model_family
        if expected is not None and saved_for != expected:
            shown = {"sd15": "SD1.5", "sdxl": "SDXL"}
            self.fail("sdxl", f"the file was saved for {shown[saved_for]} (sdxl = "
                              f"{str(saved_for == 'sdxl').lower()}), but the base model it is "
                              f"used with is {shown[expected]}; give it only to "
                              f"{shown[saved_for]} models (models.NAME.preset), or use a preset "
                              f"saved for {shown[expected]}")
        return saved_for

    # Fields that the GUI renames or combines

    def network(self) -> None:
        if "LoRA_type" not in self.data:
            return
        lora_type = self.value("LoRA_type", "str") or "Standard"
        if lora_type not in LORA_TYPES:
            self.fail("LoRA_type", f"{lora_type!r} is not supported; lorad trains only "
                                   f"{' and '.join(map(repr, LORA_TYPES))} (sd-scripts' own "
                                   "networks.lora)")
        self.put("network_module", LORA_TYPES[lora_type], "LoRA_type")
        network_args = []
        fields = [*BLOCK_FIELDS, "rank_dropout", "module_dropout"]
        if lora_type == "Kohya LoCon":
            fields += ["conv_dim", "conv_alpha"]
        for key in fields:
            if key not in self.data:
                continue
            value = self.value(key, "str" if key in BLOCK_FIELDS else "float")
            if value is None:
                continue
            text = number_text(value)
            if not NETWORK_ARG_VALUE.fullmatch(text):
                self.fail(key, f"{text!r} is not a value lorad can pass on")
            network_args.append(f"{key}={text}")
        self.put("network_args", network_args or None, "LoRA_type")

    def attention(self) -> None:
        if "xformers" not in self.data:
            return
        choice = self.data["xformers"]
        if isinstance(choice, bool):  # files from before the GUI offered sdpa
            choice = "xformers" if choice else "none"
        self.used.add("xformers")
        if choice not in ("xformers", "sdpa", "none"):
            self.fail("xformers", f"expected \"xformers\", \"sdpa\" or \"none\", got {choice!r}")
        self.put("xformers", choice == "xformers", "xformers")
        self.put("sdpa", choice == "sdpa", "xformers")

    def resolution(self) -> None:
        if "max_resolution" not in self.data:
            return
        text = self.value("max_resolution", "str")
        if text is None:
            self.put("resolution", None, "max_resolution")
            return
        sides = [side.strip() for side in text.split(",")]
        if len(sides) not in (1, 2) or not all(side.isdigit() for side in sides):
            self.fail("max_resolution", f"expected \"WIDTH,HEIGHT\", got {text!r}")
        width, height = int(sides[0]), int(sides[-1])
        self.put("resolution", width if width == height else f"{width},{height}",
                 "max_resolution")

    def learning_rates(self) -> None:
        # As the GUI: a U-Net or text-encoder rate replaces learning_rate, and with both given, a
        # rate of 0 for one of them trains only the other. Fields missing from the file leave
        # lorad's values alone.
        rates = {key: self.value(key, "float")
                 for key in ("learning_rate", "unet_lr", "text_encoder_lr") if key in self.data}
        unet, text_encoder = rates.get("unet_lr"), rates.get("text_encoder_lr")
        for key, rate in rates.items():
            self.put(key, None if key == "learning_rate" and (unet or text_encoder) else rate, key)
        if "unet_lr" in rates and "text_encoder_lr" in rates:
            if not (unet or text_encoder or rates.get("learning_rate")):
                self.fail("learning_rate", "every learning rate is 0; the GUI would not train")
            self.put("network_train_unet_only", bool(unet and not text_encoder),
                     "text_encoder_lr")
            self.put("network_train_text_encoder_only", bool(text_encoder and not unet),
                     "unet_lr")

    def warmup(self) -> None:
        percent = self.value("lr_warmup", "float") if "lr_warmup" in self.data else None
        steps = self.value("lr_warmup_steps", "float") if "lr_warmup_steps" in self.data else None
        if steps is not None:  # newer GUIs: steps, or a ratio below 1; it wins over lr_warmup
            self.put("lr_warmup_steps", int(steps) if steps >= 1 else steps, "lr_warmup_steps")
        elif "lr_warmup" in self.data:
            if percent is not None and not 0 < percent < 100:
                self.fail("lr_warmup", f"expected a percentage of the steps below 100, got "
                                       f"{percent!r}")
            if percent is not None and self.args.get("lr_scheduler") == "constant":
                # Kohya refuses warmup steps for "constant"; the GUI zeroes the field for it.
                self.notes.append("ignored key 'lr_warmup': the constant scheduler has no warmup")
                percent = None
            self.put("lr_warmup_steps", None if percent is None else percent / 100, "lr_warmup")

    def optimizer(self) -> None:
        if "optimizer" in self.data:
            name = self.value("optimizer", "str")
            if name is not None and name.lower() not in KNOWN_OPTIMIZERS:
                self.fail("optimizer", f"{name!r} is not an optimizer lorad knows "
                                       f"({', '.join(sorted(KNOWN_OPTIMIZERS.values()))})")
            self.put("optimizer_type", name and KNOWN_OPTIMIZERS[name.lower()], "optimizer")
        for key in ("optimizer_args", "lr_scheduler_args"):
            if key in self.data:
                self.put(key, self.key_values(key), key)

    def key_values(self, key: str) -> list[str] | None:
        """'weight_decay=0.1 betas=0.9,0.99' as a list; anything but key=value is refused."""
        text = self.value(key, "str")
        if text is None:
            return None
        items = text.replace('"', "").split()
        for item in items:
            if not KEY_VALUE.fullmatch(item):
                self.fail(key, f"{item!r} is not a key=value setting; only key=value settings "
                               "are passed on")
        return items or None

    def noise(self) -> None:
        # The GUI passes only the settings of the noise offset type chosen.
        kind = self.value("noise_offset_type", "str") if "noise_offset_type" in self.data else None
        original = ("noise_offset", "adaptive_noise_scale", "noise_offset_random_strength")
        multires = ("multires_noise_iterations", "multires_noise_discount")
        for key in (*original, *multires):
            if key not in self.data:
                continue
            chosen = (kind or "Original") == ("Original" if key in original else "Multires")
            value_kind = {"noise_offset_random_strength": "bool",
                          "multires_noise_iterations": "int"}.get(key, "float")
            value = self.value(key, value_kind)
            self.put(key, value if chosen else None, key)

    def sdxl_fields(self, sdxl: bool) -> None:
        # The GUI passes these only for SDXL (train_network.py does not know the second one).
        for key, name in (("sdxl_no_half_vae", "no_half_vae"),
                          ("sdxl_cache_text_encoder_outputs", "cache_text_encoder_outputs")):
            if key in self.data:
                self.put(name, True if self.value(key, "bool") and sdxl else None, key)

    # What is left

    def note_the_rest(self) -> None:
        for key, value in self.data.items():
            if key in self.used or not is_set(value):
                continue  # an empty field loses nothing by being ignored
            if key in LORAD_SETS:
                self.notes.append(f"ignored key {key!r}: {LORAD_SETS[key]}")
            elif key in GUI_ONLY or key in ("conv_dim", "conv_alpha", "rank_dropout",
                                             "module_dropout", *BLOCK_FIELDS):
                self.notes.append(f"ignored GUI-only key {key!r}")
            else:
                self.notes.append(f"ignored unknown key {key!r}")

    def validate(self, family: str) -> None:
        for name, value in self.args.items():
            if value is None or value is False:
                continue
            for problem in check_args({name: value}, family):
                self.fail(self.source[name], problem)
