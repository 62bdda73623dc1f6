"""Where a job's files live: its work folder under <state_dir>/work/<id>/ and its outbox folder.

work/<id>/source/            the claimed subject folder, exactly as dropped (never modified)
work/<id>/dataset/           training_images/<repeats>_<token>/, manifest.json, report.json,
                             dataset.png
work/<id>/train/run-NN/      one Kohya output folder per run (epochs, -state folders, samples)
work/<id>/epochs/            every finished epoch, harvested from the runs under its real number
work/<id>/samples/           every sample image, renamed after its real epoch and step
work/<id>/train.log          everything Kohya printed, all runs
work/<id>/loss.jsonl         the loss per step, at most a point a second (the web page's curve)
<outbox>/<token>/            what a person takes away
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from lorad.settings import Settings
from lorad.store import Job


@dataclass(frozen=True)
class JobPaths:
    root: Path
    outbox: Path | None

    @classmethod
    def of(cls, settings: Settings, job: Job) -> JobPaths:
        outbox = Path(job.outbox_dir) if job.outbox_dir else None
        return cls(Path(job.work_dir) if job.work_dir else settings.job_dir(job.id), outbox)

    @property
    def source(self) -> Path:
        return self.root / "source"

    @property
    def source_partial(self) -> Path:
        return self.root / ".source.partial"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def training_images(self) -> Path:
        return self.dataset / "training_images"

    @property
    def manifest(self) -> Path:
        return self.dataset / "manifest.json"

    @property
    def report(self) -> Path:
        return self.dataset / "report.json"

    @property
    def dataset_sheet(self) -> Path:
        return self.dataset / "dataset.png"

    @property
    def train(self) -> Path:
        return self.root / "train"

    def run_dir(self, number: int) -> Path:
        return self.train / f"run-{number:02d}"

    @property
    def epochs(self) -> Path:
        return self.root / "epochs"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def train_log(self) -> Path:
        return self.root / "train.log"

    @property
    def loss_log(self) -> Path:
        return self.root / "loss.jsonl"


def epoch_file_name(token: str, epoch: int) -> str:
    """How lorad names epoch `epoch` of `token`'s LoRA, in the work folder and the outbox."""
    return f"{token}-{epoch:06d}.safetensors"


def epoch_files(folder: Path, token: str) -> dict[int, Path]:
    """The epoch files of `token` in `folder` (named by epoch_file_name), by epoch, oldest first."""
    found = {}
    for path in folder.glob(f"{glob.escape(token)}-*.safetensors"):
        number = path.name.removeprefix(f"{token}-").removesuffix(".safetensors")
        if number.isdigit() and path.name == epoch_file_name(token, int(number)):
            found[int(number)] = path
    return dict(sorted(found.items()))
