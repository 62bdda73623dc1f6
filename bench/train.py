"""Does the GPU wait for lorad between trainings?

Five subject folders are dropped at once into the inbox of a real `lorad run` with one GPU slot.
The stand-in Kohya (tests/sd_scripts) takes a fixed time per epoch, so every training lasts the
same. From lorad's own record of each run (start, end) this prints:
- the sum of the GPU slot's idle gaps between trainings (one run's end to the next one's start),
  against the target of under 2 s in total;
- lorad's wall time from the first training's start to the last one's end, over the sum of the
  trainings' own times (the overhead), against the target of under 2 %;
- and, as the named alternative, the same trainings run back to back by a shell loop with no
  preparation in between (the floor the daemon is measured against).

    python bench/train.py [--jobs 5] [--epochs 3] [--epoch-seconds 2] [--caption]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import SD_SCRIPTS, dump_toml  # noqa: E402
from tests.daemon_process import DaemonProcess, all_final, lorad  # noqa: E402
from tests.photos import make_photos  # noqa: E402


def configure(root: Path, args: argparse.Namespace) -> Path:
    model = root / "base.safetensors"
    model.write_bytes(b"stand-in")
    control = root / "trainer.json"
    control.write_text(json.dumps({"epoch_seconds": args.epoch_seconds}))
    caption: dict = {"enabled": False}
    if args.caption:
        from tests.blipfixture import build_tiny_blip

        build_tiny_blip(root / "blip")
        caption = {"model": str(root / "blip"), "device": "cpu", "num_beams": 2,
                   "min_length": 3, "max_length": 10}
    config = {
        "inbox": str(root / "inbox"), "outbox": str(root / "outbox"),
        "state_dir": str(root / "state"), "gpus": [0],
        "watch": {"settle_seconds": 0.5}, "prepare": {"min_images": 3},
        "caption": caption,
        "kohya": {"sd_scripts": str(SD_SCRIPTS), "python": sys.executable, "accelerate": False},
        "models": {"sd15": {"path": str(model), "family": "sd15"}},
    }
    path = root / "lorad.toml"
    path.write_text(dump_toml(config))
    return path


def trainings(config: Path, jobs: list[dict]) -> list[tuple[float, float]]:
    spans = []
    for job in jobs:
        shown = json.loads(lorad(config, "show", str(job["id"]), "--json").stdout)
        spans += [(run["started"], run["ended"]) for run in shown["train"]["runs"]]
    return sorted(spans)


def back_to_back(root: Path, config: Path, count: int) -> float:
    """The alternative: the same runs started one after another by a plain loop."""
    from lorad.settings import load_settings

    command = (root / "state" / "work" / "000001" / "train" / "run-01" / "command.txt")
    argv = command.read_text().split("\n")[:-1]
    settings = load_settings(config)
    started = time.monotonic()
    for index in range(count):
        out = root / "loop" / str(index)
        argv_i = [a if a != argv[argv.index("--output_dir") + 1] else str(out) for a in argv]
        subprocess.run(argv_i, cwd=settings.kohya.sd_scripts, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={"FAKE_SD_SCRIPTS": str(root / "trainer.json"), "PATH": "/usr/bin"})
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--epoch-seconds", type=float, default=2.0)
    parser.add_argument("--caption", action="store_true", help="caption with a tiny BLIP on CPU")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lorad-bench-train-"))
    config = configure(root, args)
    (root / "inbox").mkdir()
    daemon = DaemonProcess(config, root / "daemon.log",
                           env={"FAKE_SD_SCRIPTS": str(root / "trainer.json")}).start()
    try:
        for index in range(args.jobs):
            source = root / "src" / f"subject{index}"
            make_photos(source, 4, size=(320, 320), seed=index)
            (source / "lora.toml").write_text(f"epochs = {args.epochs}\n")
        for index in range(args.jobs):  # dropped at once
            shutil.move(str(root / "src" / f"subject{index}"), root / "inbox")
        jobs = daemon.wait_for(all_final(args.jobs), timeout=args.jobs * args.epochs *
                               args.epoch_seconds * 3 + 120)
    finally:
        daemon.stop()
    assert all(j["state"] == "done" for j in jobs), jobs
    spans = trainings(config, jobs)
    gaps = [later[0] - earlier[1] for earlier, later in zip(spans, spans[1:], strict=False)]
    busy = sum(end - start for start, end in spans)
    wall = spans[-1][1] - spans[0][0]
    overhead = wall / busy - 1
    loop = back_to_back(root, config, args.jobs)
    print(f"{args.jobs} jobs x {args.epochs} epochs x {args.epoch_seconds:g} s on one GPU slot"
          f"{' (captioning on the CPU)' if args.caption else ''}")
    print("  trainings, each (lorad's record): "
          + ", ".join(f"{end - start:.2f}s" for start, end in spans))
    print(f"  idle gaps between trainings: {', '.join(f'{g * 1000:.0f} ms' for g in gaps)}")
    print(f"  total idle gap: {sum(gaps):.3f} s  (target < 2 s: "
          f"{'met' if sum(gaps) < 2 else 'MISSED'}, {sum(gaps) / 2:.1%} of the budget)")
    print(f"  wall {wall:.2f} s / sum of trainings {busy:.2f} s = overhead {overhead:+.2%} "
          f"(target < 2 %: {'met' if overhead < 0.02 else 'MISSED'})")
    print(f"  alternative, a plain loop running the same {args.jobs} commands back to back: "
          f"{loop:.2f} s; lorad's wall / loop = {wall / loop:.3f}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
