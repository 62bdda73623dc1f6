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

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, TomlConfigSettingsSource

from lorad.sections import (
    CaptionSettings,
    ClusterSettings,
    DeliverSettings,
    KohyaSettings,
    ModelSettings,
    NotifySettings,
    PrepareSettings,
    ScoreSettings,
    WatchSettings,
    WebSettings,
)

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
