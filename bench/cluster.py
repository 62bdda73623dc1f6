"""Do three GPU nodes train three times as fast as one, and what does the cluster cost per job?

Nine jobs, prepared and captioned, wait for training; lorad's scheduler hands them to the Ray
executor, on a `ray.cluster_utils.Cluster` of one machine: a head without GPUs and 3 worker nodes
with one declared GPU each, then the same nine on a cluster with a single such node. Every file
travels (`cluster.ship = "always"`), as it would without a shared filesystem. The stand-in Kohya
(tests/sd_scripts) takes a fixed time per epoch and records when each trainer process really
started and exited. This prints:
- the makespan (from the first dispatch to the last job done, delivery included) on 3 nodes and
  on 1, and their ratio, against the target of at least 2.7x;
- the coordination overhead per job, from the trainer's own records: its node's GPU idle
  before the trainer started (from the previous trainer's exit on that node, or from the
  dispatch: placing the actor, shipping the dataset), plus from the trainer's exit to lorad's
  end of the run (the last files coming back), against the target of under 2 s;
- the bytes shipped per job, both ways.

    python bench/cluster.py [--jobs 9] [--epochs 2] [--epoch-seconds 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lorad.cluster import make_executor  # noqa: E402
from lorad.context import Context  # noqa: E402
from lorad.daemon.scheduler import Scheduler  # noqa: E402
from lorad.settings import load_settings  # noqa: E402
from lorad.store import FINAL, Store  # noqa: E402
from tests.configs import dump_toml  # noqa: E402
from tests.jobs import prepared_job, trainer_exits, trainer_runs  # noqa: E402

MB = 1024 * 1024


def measure(nodes: int, jobs: int, epochs: int, epoch_seconds: float, folder: Path) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "num_gpus": 0, "object_store_memory": 100 * MB,
        "include_dashboard": False})
    for _ in range(nodes):
        cluster.add_node(num_cpus=1, num_gpus=1, object_store_memory=100 * MB)
    cluster.wait_for_nodes()
    try:
        return run_jobs(cluster.address, jobs, epochs, epoch_seconds, folder)
    finally:
        ray.shutdown()
        cluster.shutdown()


def run_jobs(address: str, jobs: int, epochs: int, epoch_seconds: float, folder: Path) -> dict:
    control = folder / "control.json"
    control.write_text(f'{{"epoch_seconds": {epoch_seconds}}}')
    model = folder / "base.safetensors"
    model.write_bytes(b"stand-in base model")
    config = folder / "lorad.toml"
    config.write_text(dump_toml({
        "inbox": str(folder / "inbox"), "outbox": str(folder / "outbox"),
        "state_dir": str(folder / "state"),
        "kohya": {"sd_scripts": str(ROOT / "tests" / "sd_scripts"), "python": sys.executable,
                  "accelerate": False, "env": {"FAKE_SD_SCRIPTS": str(control)}},
        "models": {"sd15": {"path": str(model), "family": "sd15"}},
        "cluster": {"engine": "ray", "address": address, "ship": "always"}}))
    settings = load_settings(config)
    for path in (settings.inbox, settings.outbox, settings.work_dir):
        Path(path).mkdir(parents=True, exist_ok=True)
    store = Store(settings.db_path)
    ctx = Context(settings, store, executor=make_executor(settings, store))
    ids = [prepared_job(ctx, f"subject{n}", images=12, subject={"epochs": epochs})
           for n in range(jobs)]
    wake = threading.Event()
    scheduler = Scheduler(ctx, [0], wake)
    started = time.time()
    while not all(store.get(j).state in FINAL for j in ids):
        wake.clear()
        scheduler.dispatch()
        wake.wait(0.2)
    makespan = max(store.get(j).finished_at for j in ids) - started
    assert all(store.get(j).state == "done" for j in ids)
    runs, exits = trainer_runs(control), trainer_exits(control)
    by_token = {r["argv"][r["argv"].index("--output_name") + 1]: r for r in runs}
    lanes: dict[str, list[tuple[float, float, float]]] = {}
    for job_id in ids:
        job = store.get(job_id)
        [lorad_run] = job.train["runs"]
        trainer = by_token[job.token]
        lanes.setdefault(lorad_run["where"], []).append(
            (trainer["started"], exits[trainer["pid"]]["exited"], lorad_run["ended"]))
    overheads = []  # per job: its node's idle time before it, and its files' last return
    for lane in lanes.values():
        previous_exit = started
        for begin, end, lorad_end in sorted(lane):
            overheads.append((begin - previous_exit) + (lorad_end - end))
            previous_exit = end
    return {"makespan": makespan, "overhead": overheads,
            "shipped": [ctx.executor.shipped[j] for j in ids]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--epoch-seconds", type=float, default=6.0)
    args = parser.parse_args()
    os.environ.pop("FAKE_SD_SCRIPTS", None)
    results = {}
    for nodes in (3, 1):
        with tempfile.TemporaryDirectory(prefix=f"lorad-bench-cluster-{nodes}-") as tmp:
            results[nodes] = measure(nodes, args.jobs, args.epochs, args.epoch_seconds, Path(tmp))
    three, one = results[3], results[1]
    print(f"{args.jobs} jobs x {args.epochs} epochs x {args.epoch_seconds:g} s, stand-in trainer")
    print(f"makespan: 3 nodes {three['makespan']:.1f} s, 1 node {one['makespan']:.1f} s: "
          f"{one['makespan'] / three['makespan']:.2f}x (target >= 2.7x)")
    every = three["overhead"] + one["overhead"]
    print(f"coordination overhead per job: median {statistics.median(every):.2f} s, max "
          f"{max(every):.2f} s (target < 2 s)")
    print(f"bytes shipped per job (both ways): {statistics.mean(three['shipped']) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
