"""The daemon's configuration: one TOML file; every key can be overridden by LORAD_* variables.

Precedence: environment > TOML file > defaults. Unknown keys anywhere (nested tables included, and
LORAD_* variables that name no key) are errors that name the key.

Without --config, the first of ./lorad.toml, ~/.config/lorad/lorad.toml ($XDG_CONFIG_HOME) and
/etc/lorad/lorad.toml that exists is read: the nearest, most personal one wins. With none of them,
lorad runs on defaults in the user's own places (`home_defaults`); a file that exists must name
its folders.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, TomlConfigSettingsSource

SYSTEM_CONFIG = Path("/etc/lorad/lorad.toml")
ENV_PREFIX = "LORAD_"


def _xdg(variable: str, fallback: str) -> Path:
    """An XDG base directory: the variable when it holds an absolute path, else ~/fallback."""
    value = os.environ.get(variable, "")
    return Path(value) if value.startswith("/") else Path.home() / fallback


def user_config_path() -> Path:
    """~/.config/lorad/lorad.toml: where `lorad init` writes, and lorad looks second."""
    return _xdg("XDG_CONFIG_HOME", ".config") / "lorad" / "lorad.toml"


def default_config_paths() -> tuple[Path, ...]:
    """Where lorad looks for its configuration without --config, in this order."""
    return Path("lorad.toml"), user_config_path(), SYSTEM_CONFIG


def home_defaults() -> dict[str, Path]:
    """The folders lorad uses when no configuration file exists: the user's own."""
    return {"inbox": Path.home() / "lorad" / "inbox", "outbox": Path.home() / "lorad" / "outbox",
            "state_dir": _xdg("XDG_STATE_HOME", ".local/state") / "lorad"}

# Phrases BLIP likes to invent (the guide names the first two); removed from generated captions.
DEFAULT_CAPTION_REMOVE = [
    "holding a remote control",
    "with a microphone in (?:his|her|the) hand",
    "holding a microphone",
    "with a microphone",
    "holding a cell phone",
    "holding a toothbrush",
    "holding a tennis racket",
    "holding a wii controller",
    "holding a banana",
    "holding a hot dog",
    "holding a knife",
    "with a tie",
    "arafed",
    "araffe",
    "arafly",
    "there is",
]


class Section(BaseModel):
    """A table of the configuration: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WatchSettings(Section):
    settle_seconds: float = Field(10.0, ge=0, description="a folder must stay unchanged this long")
    rescan_seconds: float = Field(30.0, gt=0, description="full rescan of the inbox this often")
    mode: Literal["auto", "native", "poll"] = "auto"
    poll_seconds: float = Field(2.0, gt=0, description="polling interval in poll mode")
    ready_marker: str = ".lorad-ready"
    ignore: list[str] = Field(default_factory=list, description="extra glob patterns to ignore")


class PrepareSettings(Section):
    min_side: int = Field(256, ge=1, description="refuse images whose short side is smaller")
    max_side: int = Field(2048, ge=64, description="downscale images whose long side is larger")
    max_pixels: int = Field(
        178_956_970, ge=1, description="refuse images with more pixels (decompression bombs)"
    )
    min_images: int = Field(5, ge=1, description="refuse datasets with fewer images")
    few_images: int = Field(10, ge=1, description="warn when there are this many or fewer")
    max_images: int = Field(100, ge=1, description="warn when there are more")
    blur_threshold: float = Field(
        60.0, ge=0, description="Laplacian variance under which an image is called blurry"
    )
    blur_relative: float = Field(
        0.2, ge=0, le=1, description="blurry when under this fraction of the dataset's median"
    )
    duplicate_distance: int = Field(
        6, ge=0, le=64, description="perceptual-hash distance at or under which images match"
    )
    workers: int = Field(0, ge=0, description="conversion processes; 0 = one per core")
    strict: bool = Field(False, description="warnings stop the job instead of only being reported")


class CaptionSettings(Section):
    enabled: bool = True
    model: str = "Salesforce/blip-image-captioning-large"
    device: str = Field("auto", description='"auto", "cpu", "cuda" or "cuda:N"')
    precision: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: float16 on a GPU, bfloat16 on a CPU that has it, else float32"
    )
    num_beams: int = Field(9, ge=1, le=64)
    min_length: int = Field(15, ge=0, le=512)
    max_length: int = Field(75, ge=1, le=512)
    batch_size: int = Field(4, ge=1, le=256)
    no_repeat_ngram_size: int = Field(3, ge=0, le=16)
    remove: list[str] = Field(default_factory=lambda: list(DEFAULT_CAPTION_REMOVE))
    python: str = Field("", description="python for the captioning process; empty = lorad's own")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or (
            value.startswith("cuda:") and value[5:].isdigit()
        ):
            return value
        raise ValueError('expected "auto", "cpu", "cuda" or "cuda:N" (N a GPU index)')

    @model_validator(mode="after")
    def _lengths(self) -> CaptionSettings:
        if self.min_length > self.max_length:
            raise ValueError(
                f"min_length ({self.min_length}) is larger than max_length ({self.max_length})"
            )
        return self


class KohyaSettings(Section):
    sd_scripts: Path = Path("/opt/sd-scripts")
    python: str = Field(
        "", description="python of Kohya's environment; empty = <sd_scripts>/venv/bin/python"
    )
    accelerate: bool = True
    mixed_precision: Literal["auto", "fp16", "bf16", "no"] = "auto"
    max_attempts: int = Field(3, ge=1, le=20, description="tries for failures other than OOM")
    stall_minutes: float = Field(30.0, gt=0, description="kill a run silent this long")
    stop_grace_seconds: float = Field(
        90.0, ge=0, description="on cancel or shutdown, wait this long after SIGTERM"
    )
    tokenizer_cache_dir: Path | None = None
    env: dict[str, str] = Field(default_factory=dict, description="extra environment for Kohya")
    preset: Path | None = Field(None, description="a kohya_ss GUI JSON applied to every job")

    def python_path(self) -> str:
        return self.python or str(self.sd_scripts / "venv" / "bin" / "python")


class ModelSettings(Section):
    path: str = Field(description="a .safetensors/.ckpt file, a diffusers folder or a hub name")
    family: Literal["sd15", "sdxl"]
    preset: Path | None = Field(None, description="a kohya_ss GUI JSON for this base model")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="on a cluster: the custom resources a node needs to train this model",
    )


class ClusterSettings(Section):
    """[cluster]: with engine = "ray", trainings run on a Ray cluster instead of this machine's
    GPUs (`gpus`); "local" (the default) trains on this machine."""

    engine: Literal["local", "ray"] = "local"
    address: str = Field("auto", description='"auto", "host:6379" or "ray://host:10001"')
    ship: Literal["auto", "always"] = Field(
        "auto", description="auto: no copies to a node that sees the coordinator's files"
    )
    scratch_dir: str = Field("", description="each node's folder for copies; empty: its temp")


class NotifySettings(Section):
    urls: list[str] = Field(default_factory=list)
    config: Path | None = None
    events: list[Literal["accepted", "epoch", "rejected", "failed", "done"]] = Field(
        default_factory=lambda: ["rejected", "failed", "done"]
    )
    retry_seconds: list[float] = Field(
        default_factory=lambda: [30.0, 120.0, 600.0, 3600.0],
        description="waits between tries of a failed notification",
    )
    timeout_seconds: float = Field(30.0, gt=0)


class DeliverSettings(Section):
    copy_to: list[Path] = Field(
        default_factory=list, description="folders that also get the final LoRA"
    )


class ScoreSettings(Section):
    enabled: bool = Field(False, description="score each epoch's likeness to the person")
    samples_per_prompt: int = Field(
        0, ge=0, le=8, description="samples per prompt per epoch; 0: 4 with scoring on, else 1"
    )
    auto_pick: bool = Field(False, description="make the suggested epoch the LoRA")
    tolerance: float = Field(0.03, ge=0, le=1, description="how close to the best is as good")
    min_faces: float = Field(0.5, ge=0, le=1, description="share of samples that must show a face")
    min_spread: float = Field(0.05, ge=0, le=2, description="samples closer are all the same")

    def per_prompt(self) -> int:
        """How many samples of each prompt an epoch draws."""
        return self.samples_per_prompt or (4 if self.enabled else 1)


class WebSettings(Section):
    host: str = Field("127.0.0.1", description="lorad web listens here (--host overrides)")
    port: int = Field(8765, ge=1, le=65535)
    token: str = Field("", description="a secret for Authorization: Bearer and the login form")
    password: str = Field("", description="a password for the login form (and Bearer)")
    max_files: int = Field(200, ge=1, description="files in one folder dropped through the page")
    max_file_mb: float = Field(50.0, gt=0, description="the largest such file")
    max_upload_mb: float = Field(2000.0, gt=0, description="one such folder in all")

    @property
    def secrets(self) -> list[str]:
        return [secret for secret in (self.token, self.password) if secret]


class Settings(BaseSettings):
    """Everything the daemon reads from lorad.toml (and LORAD_* variables)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    inbox: Path
    outbox: Path
    state_dir: Path
    failed: Path | None = None
    default_model: str = "sd15"
    gpus: list[int] = Field(default_factory=lambda: [0])
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    watch: WatchSettings = Field(default_factory=WatchSettings)
    prepare: PrepareSettings = Field(default_factory=PrepareSettings)
    caption: CaptionSettings = Field(default_factory=CaptionSettings)
    kohya: KohyaSettings = Field(default_factory=KohyaSettings)
    models: dict[str, ModelSettings] = Field(default_factory=dict)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    deliver: DeliverSettings = Field(default_factory=DeliverSettings)
    score: ScoreSettings = Field(default_factory=ScoreSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("list at least one GPU index, e.g. gpus = [0]")
        if len(set(value)) != len(value) or min(value) < 0:
            raise ValueError("GPU indexes must be distinct and not negative")
        return value

    @model_validator(mode="after")
    def _paths(self) -> Settings:
        if self.failed is None:
            self.failed = self.state_dir / "failed"
        if self.default_model not in self.models and self.models:
            raise ValueError(
                f"default_model {self.default_model!r} is not one of the [models] tables "
                f"({', '.join(sorted(self.models))})"
            )
        check_overlaps(self)
        return self

    # Paths the daemon derives from the configuration.
    @property
    def failed_dir(self) -> Path:
        assert self.failed is not None
        return self.failed

    @property
    def db_path(self) -> Path:
        return self.state_dir / "lorad.db"

    @property
    def work_dir(self) -> Path:
        return self.state_dir / "work"

    def job_dir(self, job_id: int) -> Path:
        return self.work_dir / f"{job_id:06d}"


def _inside(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


def check_overlaps(settings: Settings) -> None:
    """Refuse folder layouts where lorad would take its own output as new input (or worse)."""
    inbox = settings.inbox
    named = {"outbox": settings.outbox, "state_dir": settings.state_dir, "failed": settings.failed}
    for key, path in named.items():
        assert path is not None
        if _inside(path, inbox):
            raise ValueError(
                f"{key} ({path}) is inside the inbox ({inbox}): lorad would take its own files "
                "as new subject folders; put it outside the inbox"
            )
        if _inside(inbox, path):
            raise ValueError(
                f"the inbox ({inbox}) is inside {key} ({path}); give the inbox a folder of its own"
            )
    if _inside(settings.outbox, settings.state_dir) or _inside(settings.state_dir, settings.outbox):
        raise ValueError(
            f"outbox ({settings.outbox}) and state_dir ({settings.state_dir}) overlap; "
            "keep them apart so that cleaning one never touches the other"
        )


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why."""


def find_config(path: Path | None) -> Path | None:
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"{path}: no such configuration file")
        return path
    for candidate in default_config_paths():
        if candidate.is_file():
            return candidate
    return None


def _unknown_part(model: type[BaseModel], parts: list[str]) -> str | None:
    """The first of `parts` (a key path, lower case) that names no key of `model`, or None.

    A table of names (`models`, `kohya.env`) takes any name at its level.
    """
    fields = {name.lower(): info for name, info in model.model_fields.items()}
    head, rest = parts[0], parts[1:]
    if head not in fields:
        return head
    annotation = fields[head].annotation
    if rest and get_origin(annotation) is dict:
        rest, annotation = rest[1:], get_args(annotation)[1]
    if not rest:
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _unknown_part(annotation, rest)
    return rest[0]  # a plain value has no keys below it


def _check_env() -> None:
    """Refuse LORAD_* variables that name no key: the message names the variable."""
    for name in os.environ:
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX):].lower().split("__")
        wrong = _unknown_part(Settings, parts)
        if wrong is not None:
            key = ".".join(parts)
            raise ConfigError(
                f"environment variable {name}: no configuration key {key!r} ({wrong!r} is not "
                "a key there); unset it, or check the spelling against README's configuration "
                "keys"
            )


def describe_errors(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key {key!r}; remove it or check its spelling")
        elif item["type"] == "missing":
            env = ENV_PREFIX + key.upper().replace(".", "__")
            lines.append(f"{source}: {key!r} is required (set it in the file or as {env})")
        else:
            value = item.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: {key}: {message}{shown}")
    return "\n".join(lines)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read the configuration: the given file, else the first of `default_config_paths`, else
    the defaults (`home_defaults` for the folders; LORAD_* variables still apply)."""
    config_path = find_config(path)
    _check_env()
    source = str(config_path) if config_path else "the defaults (no configuration file found)"
    if config_path is None:
        named = {name.upper() for name in os.environ}
        for key, value in home_defaults().items():
            if f"{ENV_PREFIX}{key.upper()}" not in named:
                overrides.setdefault(key, value)
    cls = type(
        "FileSettings",
        (Settings,),
        {"model_config": SettingsConfigDict(**{**Settings.model_config, "toml_file": config_path})},
    )
    try:
        settings = cls(**overrides)
    except ValidationError as error:
        raise ConfigError(describe_errors(error, source)) from None
    except ValueError as error:  # TOML syntax
        raise ConfigError(f"{source}: {error}") from None
    _keep_env_case(settings)
    return settings


def _keep_env_case(settings: Settings) -> None:
    """Variables for the trainer given as LORAD_KOHYA__ENV__NAME keep NAME as written: settings
    read from the environment come in lower case, and HF_HUB_OFFLINE is not hf_hub_offline."""
    prefix = "LORAD_KOHYA__ENV__"
    for variable, value in os.environ.items():
        if variable.upper().startswith(prefix):
            name = variable[len(prefix):]
            settings.kohya.env.pop(name.lower(), None)
            settings.kohya.env[name] = value
