"""The tables of lorad.toml, one model each: [watch], [prepare], [caption], [kohya], [models.NAME],
[notify], [deliver], [score], [web], [cluster]. Unknown keys in any of them are errors.
`lorad.settings` puts them together, with where the file is found and the LORAD_* variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
