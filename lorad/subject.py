"""lora.toml: the optional per-subject settings dropped with the photos, and their rules.

Every value a subject folder can set is typed and bounded here. Nothing in it reaches Kohya's
command line except through these fields: no free-form argument strings, no paths.
"""

from __future__ import annotations

import os
import re
import tomllib
import unicodedata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lorad.captioning.text import CONTROL_CHARACTER
from lorad.settings import Settings
from lorad.store import Job
from lorad.training.kohya.presets import load_preset

SUBJECT_FILE = "lora.toml"
MISNAMED_SUBJECT_FILES = ("lora.toml", "lora.toml.txt")
MAX_SUBJECT_FILE = 64 * 1024
TOKEN_RE = re.compile(r"^[A-Za-z0-9_]{3,40}$")
TOKEN_RULE = "3 to 40 characters, only letters A-Z/a-z, digits and underscores"
# Settings recorded without epochs (by a lorad that did not fill them in) train the guide's 6, as
# they would have then.
UNRECORDED_EPOCHS = 6

# The optimizers and schedulers Kohya's train_network.py accepts by name.
OPTIMIZERS = (
    "AdamW",
    "AdamW8bit",
    "PagedAdamW",
    "PagedAdamW8bit",
    "PagedAdamW32bit",
    "Lion",
    "Lion8bit",
    "PagedLion8bit",
    "SGDNesterov",
    "SGDNesterov8bit",
    "DAdaptation",
    "DAdaptAdam",
    "DAdaptAdaGrad",
    "DAdaptAdan",
    "DAdaptAdanIP",
    "DAdaptLion",
    "DAdaptSGD",
    "AdaFactor",
    "Prodigy",
)
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "adafactor",
)


class SubjectError(Exception):
    """A subject folder's settings cannot be used: the message names the file, the key and why."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TrainOverrides(Strict):
    """[train] in lora.toml: the training settings a subject may change, each typed and bounded."""

    epochs: int | None = Field(None, ge=1, le=200)
    network_dim: int | None = Field(None, ge=1, le=1024)
    network_alpha: float | None = Field(None, gt=0, le=1024)
    learning_rate: float | None = Field(None, gt=0, le=1)
    unet_lr: float | None = Field(None, gt=0, le=1)
    text_encoder_lr: float | None = Field(None, ge=0, le=1)
    optimizer_type: Literal[OPTIMIZERS] | None = None  # type: ignore[valid-type]
    weight_decay: float | None = Field(None, ge=0, le=1)
    lr_scheduler: Literal[SCHEDULERS] | None = None  # type: ignore[valid-type]
    lr_scheduler_num_cycles: int | None = Field(None, ge=1, le=100)
    lr_warmup_steps: int | None = Field(None, ge=0, le=1_000_000)
    train_batch_size: int | None = Field(None, ge=1, le=64)
    resolution: int | None = Field(None, ge=256, le=2048, multiple_of=64)
    min_snr_gamma: float | None = Field(None, ge=0, le=20)
    clip_skip: int | None = Field(None, ge=1, le=12)
    keep_tokens: int | None = Field(None, ge=0, le=75)
    shuffle_caption: bool | None = None
    flip_aug: bool | None = None
    mixed_precision: Literal["auto", "fp16", "bf16", "no"] | None = None
    gradient_checkpointing: bool | None = None
    cache_latents: bool | None = None
    cache_latents_to_disk: bool | None = None
    sample_every_n_steps: int | None = Field(None, ge=0, le=1_000_000)
    sample_every_n_epochs: int | None = Field(None, ge=0, le=1000)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)

    @model_validator(mode="before")
    @classmethod
    def _floats_from_ints(cls, data: Any) -> Any:
        # TOML writes 16 for a float field as an integer; accept it (strict mode would not).
        if isinstance(data, dict):
            floats = {n for n, f in cls.model_fields.items() if f.annotation in (float | None,)}
            return {
                k: float(v) if k in floats and type(v) is int else v for k, v in data.items()
            }
        return data

    def set_values(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class CaptionOverrides(Strict):
    enabled: bool | None = None


class SubjectSettings(Strict):
    """A subject's settings after defaults are filled in (token, model) and checked."""

    token: str | None = None
    model: str | None = None
    epochs: int | None = Field(None, ge=1, le=200)
    repeats: int | None = Field(None, ge=1, le=10_000)
    sample_prompts: list[str] | None = Field(None, min_length=1, max_length=16)
    caption_prefix: str | None = Field(None, max_length=200)
    caption: CaptionOverrides = Field(default_factory=CaptionOverrides)
    strict: bool | None = None
    allow_duplicate: bool = False
    notify_tags: list[str] = Field(default_factory=list, max_length=16)
    train: TrainOverrides = Field(default_factory=TrainOverrides)

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and not TOKEN_RE.fullmatch(value):
            shown = value if len(value) <= 60 else value[:57] + "..."
            raise ValueError(f"{shown!r} is not a usable token: use {TOKEN_RULE}")
        return value

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        if value is not None and (
            "/" in value or "\\" in value or value.startswith(".") or len(value) > 64
        ):
            raise ValueError(
                f"{value[:80]!r} looks like a path; give the name of one of the daemon's "
                "[models] tables instead"
            )
        return value

    @field_validator("caption_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is not None:
            _one_line(value, "the prefix")
        return value

    @field_validator("sample_prompts")
    @classmethod
    def _prompts(cls, value: list[str] | None) -> list[str] | None:
        for prompt in value or []:
            if not prompt.strip() or len(prompt) > 500:
                raise ValueError("each prompt must be 1 to 500 characters")
            _one_line(prompt, "a prompt")
            if re.search(r"(^|\s)--", prompt):
                raise ValueError(
                    f"{prompt[:80]!r} has a '--' option; write only the prompt text "
                    "(lorad sets size, seed, steps and sampler itself)"
                )
        return value

    @field_validator("notify_tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", tag):
                raise ValueError(f"tag {tag[:60]!r}: use up to 40 letters, digits, '_', '.', '-'")
        return value

    @model_validator(mode="after")
    def _one_epochs(self) -> SubjectSettings:
        if self.train.epochs is not None:
            if self.epochs is not None and self.epochs != self.train.epochs:
                raise ValueError(
                    f"epochs is set twice, to {self.epochs} and [train] epochs = "
                    f"{self.train.epochs}; keep one"
                )
            self.epochs = self.train.epochs
            self.train.epochs = None
        return self

    # Values with their defaults applied (the caller has filled token, model and epochs).
    @property
    def total_epochs(self) -> int:
        return self.epochs or UNRECORDED_EPOCHS

    @property
    def prefix(self) -> str:
        assert self.token
        return self.caption_prefix if self.caption_prefix is not None else f"{self.token}, "

    def prompts(self) -> list[str]:
        assert self.token
        prompts = self.sample_prompts or ["photo of {token}"]
        return [p.replace("{token}", self.token) for p in prompts]

    def strict_or(self, daemon_strict: bool) -> bool:
        """Whether a warning refuses the folder: this subject's `strict`, else prepare.strict."""
        return daemon_strict if self.strict is None else self.strict

    def captions_or(self, daemon_enabled: bool) -> bool:
        """Whether BLIP captions this subject: its [caption] enabled, else caption.enabled."""
        return daemon_enabled if self.caption.enabled is None else self.caption.enabled

    def repeats_for(self, image_count: int) -> int:
        return self.repeats or max(1, 400 // max(1, image_count))


def _one_line(text: str, what: str) -> None:
    """Refuse control characters: a line break would start another line of a caption file or of
    Kohya's prompt file (another prompt, or options of its own)."""
    if match := CONTROL_CHARACTER.search(text):
        raise ValueError(
            f"{what} {text[:80]!r} holds the control character {match[0]!r} (a line break, tab "
            "or similar); write it as one line of plain text, without escapes like \\n or \\t")


def subject_of(job: Job) -> SubjectSettings:
    """The subject settings a job was accepted with (its lora.toml, filled in by prepare)."""
    return SubjectSettings.model_validate(job.settings)


def token_from_name(name: str) -> str | None:
    """A token derived from a folder name ("Silvio Santos" -> "silvio_santos"), or None."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    token = re.sub(r"[^A-Za-z0-9]+", "_", ascii_name).strip("_").lower()[:40].rstrip("_")
    return token if TOKEN_RE.fullmatch(token) else None


def _describe(error: ValidationError, path: Path) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"] if not isinstance(p, int)) or "(file)"
        if item["type"] == "extra_forbidden":
            where = key.rsplit(".", 1)
            table = f"[{where[0]}]" if len(where) == 2 else "the top level"
            allowed = _allowed_keys(where[0] if len(where) == 2 else "")
            lines.append(
                f"{path}: unknown key {key!r} in {table}; allowed keys: {', '.join(allowed)}"
            )
            continue
        message = item["msg"].removeprefix("Value error, ")
        value = item.get("input")
        got = "" if isinstance(value, dict | list) else f" (got {value!r:.80})"
        lines.append(f"{path}: {key}: {message}{got}")
    return "\n".join(lines)


def _allowed_keys(table: str) -> list[str]:
    model: type[BaseModel] = {"train": TrainOverrides, "caption": CaptionOverrides}.get(
        table, SubjectSettings
    )
    return sorted(model.model_fields)


def read_subject_file(folder: Path, shown: Path | None = None) -> SubjectSettings:
    """<folder>/lora.toml as written (defaults not filled in); an empty one if there is none.

    Messages name the file as `shown` (by default its path)."""
    path = folder / SUBJECT_FILE
    shown = shown or path
    _check_misnamed(folder, shown)
    data: dict[str, Any] = {}
    if path.is_symlink():
        raise SubjectError(f"{shown}: is a symbolic link; put the settings file itself there")
    if path.exists() and not path.is_file():
        raise SubjectError(f"{shown}: is not a plain file (a folder or a device); put the "
                           "settings file itself there")
    if path.is_file():
        try:
            raw = path.read_bytes()
            if len(raw) > MAX_SUBJECT_FILE:
                raise SubjectError(f"{shown}: {len(raw)} bytes is too large for a settings file "
                                   f"(at most {MAX_SUBJECT_FILE // 1024} KB)")
            data = tomllib.loads(raw.decode("utf-8"))
        except OSError as error:
            raise SubjectError(f"{shown}: cannot be read ({error.strerror}); make it readable "
                               "by the user running lorad") from None
        except UnicodeDecodeError:
            raise SubjectError(f"{shown}: not UTF-8 text; save it as UTF-8") from None
        except tomllib.TOMLDecodeError as error:
            raise SubjectError(f"{shown}: not valid TOML: {error}") from None
    try:
        return SubjectSettings.model_validate(data)
    except ValidationError as error:
        raise SubjectError(_describe(error, shown)) from None


def _check_misnamed(folder: Path, shown: Path) -> None:
    """A settings file under a near name (Lora.toml, lora.toml.txt from an editor that hides
    extensions) would be silently ignored: refuse it instead, saying the name it needs."""
    try:
        names = [entry.name for entry in os.scandir(folder)]
    except OSError:
        return
    near = [n for n in names if n != SUBJECT_FILE and n.lower() in MISNAMED_SUBJECT_FILES]
    if near:
        raise SubjectError(f"{shown.parent / near[0]}: lorad reads its settings only from a file "
                           f"named exactly {SUBJECT_FILE}; rename it")


def fill_token(subject: SubjectSettings, folder_name: str, path: Path) -> None:
    if subject.token is None:
        derived = token_from_name(folder_name)
        if derived is None:
            raise SubjectError(
                f"{path}: no token given, and none can be made from the folder name "
                f"{folder_name!r}; set token = \"...\" ({TOKEN_RULE})"
            )
        subject.token = derived


def preset_epochs(family: str) -> int:
    """The epochs a subject trains when its lora.toml does not say: its model family's preset's
    (SD1.5: the guide's 6 to start with; SDXL: CivitAI's 16)."""
    return int(load_preset(family)["max_train_epochs"])


def fill_epochs(subject: SubjectSettings, settings: Settings) -> None:
    assert subject.model
    if subject.epochs is None:
        model = settings.models.get(subject.model)
        # No [models] yet (a first start): the family its name suggests; the job waits at the
        # train stage until the model is configured.
        family = model.family if model else "sdxl" if "xl" in subject.model.lower() else "sd15"
        subject.epochs = preset_epochs(family)


def load_subject(folder: Path, settings: Settings, name: str | None = None) -> SubjectSettings:
    """Read <folder>/lora.toml (if any), fill in the token, the model and the epochs, check them.

    `name` is the folder's name as it was dropped: messages then name the file `<name>/lora.toml`
    (where the person put it), not its place in lorad's work area."""
    path = Path(name, SUBJECT_FILE) if name else folder / SUBJECT_FILE
    subject = read_subject_file(folder, path)
    fill_token(subject, name or folder.name, path)
    if subject.model is None:
        subject.model = settings.default_model
        where = f"the daemon's default_model ({settings.default_model!r})"
    else:
        where = f"{path}: model {subject.model!r}"
    if subject.model not in settings.models and settings.models:
        known = ", ".join(sorted(settings.models)) or "none are configured"
        raise SubjectError(
            f"{where} is not a base model of this daemon (known: {known}); use one of those "
            f"names or add a [models.{subject.model}] table to lorad.toml"
        )
    fill_epochs(subject, settings)
    return subject
