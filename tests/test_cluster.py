"""Trainings on a Ray cluster: one machine plays a head without GPUs and three worker nodes with
one (declared) GPU each; the stand-in trainer trains, and its own records say where, when, and
from which epoch. One cluster serves the whole module; the test that removes a node comes last."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lorad.context import Context
from lorad.daemon.scheduler import Scheduler
from lorad.settings import load_settings
from lorad.store import FINAL, Store
from lorad.training.kohya.outputs import safetensors_problem
from lorad.views import job_summary
from tests.jobs import arg, prepared_job, trainer_exits, trainer_runs

MB = 1024 * 1024


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'lorad[ray]')")
    from ray.cluster_utils import Cluster

    try:
        made = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "num_gpus": 0, "object_store_memory": 100 * MB,
            "include_dashboard": False})
        for _ in range(3):
            made.add_node(num_cpus=1, num_gpus=1, object_store_memory=100 * MB)
        made.wait_for_nodes()
    except Exception as error:  # no shared memory, no ports...
        print(f"Ray cannot start here: {error}")
        pytest.skip(f"Ray cannot start here: {error}")
    yield made
    ray.shutdown()
    made.shutdown()


@pytest.fixture
def cluster_ctx(cluster, config) -> Callable[..., Context]:
    def make(**overrides: Any) -> Context:
        control = os.environ["FAKE_SD_SCRIPTS"]  # the config fixture's: it reaches the nodes
        extra = {"cluster": {"engine": "ray", "address": cluster.address, "ship": "always"},
                 "kohya": {"env": {"FAKE_SD_SCRIPTS": control}}}
        for key, value in overrides.items():
            extra[key] = {**extra.get(key, {}), **value}
        settings = load_settings(config(**extra))
        for folder in (settings.inbox, settings.outbox, settings.failed_dir, settings.work_dir):
            Path(folder).mkdir(parents=True, exist_ok=True)
        from lorad.cluster import make_executor

        store = Store(settings.db_path)
        return Context(settings, store, executor=make_executor(settings, store))

    return make


class Driver:
    """The daemon's scheduler, turned in a thread until stopped."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.wake = threading.Event()
        self.scheduler = Scheduler(ctx, [0], self.wake)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self) -> None:
        while not self.stop.is_set():
            self.wake.clear()
            self.scheduler.dispatch()
            self.wake.wait(0.2)

    def wait_for(self, what: str, predicate: Callable[[], Any], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = predicate()
            if found:
                return found
            time.sleep(0.1)
        jobs = [(j.id, j.state, j.progress_text, j.error, [e.message for e in
                  self.ctx.store.events(j.id)][-4:]) for j in self.ctx.store.jobs()]
        raise AssertionError(f"timed out waiting for {what}: {jobs}")

    def close(self) -> None:
        self.ctx.stopping.set()
        self.stop.set()
        self.wake.set()
        self.thread.join()
        for thread in self.scheduler.running():
            if isinstance(thread, threading.Thread):
                thread.join(timeout=30)


def all_final(ctx: Context, job_ids: list[int]) -> bool:
    return all(ctx.store.get(j).state in FINAL for j in job_ids)


def whole_epochs(ctx: Context, job_id: int) -> list[int]:
    folder = Path(ctx.store.get(job_id).outbox_dir)
    found = sorted(folder.glob("*-0000*.safetensors"))
    assert all(safetensors_problem(p) is None for p in found), found
    return [int(p.stem.rsplit("-", 1)[1]) for p in found]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def group_of(pid: int) -> list[int]:
    """Every process in `pid`'s process group."""
    def pgid(p: str) -> int | None:
        try:
            return int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[2])
        except (OSError, ValueError, IndexError):
            return None
    group = pgid(str(pid))
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and pgid(p) == group]


def events(ctx: Context, job_id: int) -> list[str]:
    return [e.message for e in ctx.store.events(job_id)]


def test_six_jobs_run_three_at_a_time_each_on_its_own_node(cluster_ctx, fake_trainer):
    control = fake_trainer(epoch_seconds=1.0)
    ctx = cluster_ctx()
    jobs = [prepared_job(ctx, f"subject{n}", subject={"epochs": 2}) for n in range(6)]
    driver = Driver(ctx)
    try:
        driver.wait_for("six jobs done", lambda: all_final(ctx, jobs), timeout=90)
    finally:
        driver.close()
    assert [ctx.store.get(j).state for j in jobs] == ["done"] * 6
    for job_id in jobs:
        assert whole_epochs(ctx, job_id) == [1, 2]
    runs, exits = trainer_runs(control), trainer_exits(control)
    spans = sorted((r["started"], exits[r["pid"]]["exited"]) for r in runs)
    most = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert len(runs) == 6 and most == 3, spans
    places = [job_summary(ctx.store.get(j))["where"] for j in jobs]
    assert all(p.startswith("node ") for p in places) and len(set(places)) == 3, places
    assert all(any("runs on node" in m for m in events(ctx, j)) for j in jobs)
    shipped = ctx.executor.shipped  # the dataset went out, the epochs came back
    assert all(shipped[j] > 0 for j in jobs)


def test_cancel_stops_the_remote_trainers_whole_process_group(cluster_ctx, fake_trainer):
    control = fake_trainer(epoch_seconds=20.0,
                           faults=[{"kind": "ignore_sigterm", "at_step": 1}])
    ctx = cluster_ctx(kohya={"accelerate": True, "stop_grace_seconds": 2.0})
    job_id = prepared_job(ctx, subject={"epochs": 2})
    driver = Driver(ctx)
    try:
        driver.wait_for("the trainer training", lambda: trainer_runs(control) and "step" in
                        ctx.store.get(job_id).progress_text)
        pids = group_of(trainer_runs(control)[0]["pid"])
        assert len(pids) == 2  # accelerate's launcher and the script it started
        ctx.store.request_cancel(job_id)
        driver.wait_for("the job cancelled", lambda: all_final(ctx, [job_id]))
    finally:
        driver.close()
    assert ctx.store.get(job_id).state == "cancelled"
    assert not any(alive(pid) for pid in pids), pids
    log = Path(ctx.paths(ctx.store.get(job_id)).train_log).read_text()
    assert "SIGTERM received and ignored" in log  # so it took the SIGKILL after the grace time


def test_a_job_needing_a_resource_no_node_has_waits_and_says_why(cluster_ctx, fake_trainer):
    control = fake_trainer()
    ctx = cluster_ctx(models={"sdxl": {"resources": {"vram_24gb": 1}}})
    job_id = prepared_job(ctx, model="sdxl", subject={"epochs": 1})
    driver = Driver(ctx)
    try:
        text = driver.wait_for("the reason", lambda: (
            "no node" in ctx.store.get(job_id).progress_text
            and ctx.store.get(job_id).progress_text))
        assert "vram_24gb 1" in text and "GPU 1" in text
        assert any("no node in the cluster has" in m for m in events(ctx, job_id))
        assert ctx.store.get(job_id).state == "training" and trainer_runs(control) == []
        ctx.store.request_cancel(job_id)
        driver.wait_for("the job cancelled", lambda: all_final(ctx, [job_id]))
    finally:
        driver.close()
    assert ctx.store.get(job_id).state == "cancelled"


def test_doctor_lists_the_nodes_and_names_each_problem_on_each_node(cluster_ctx, tmp_path):
    from lorad.doctor.cluster import cluster as cluster_checks

    header = json.dumps({"cond_stage_model.transformer.w": {
        "dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    sd15 = tmp_path / "models" / "base-sd15.safetensors"
    sd15.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    ctx = cluster_ctx(models={"sdxl": {"resources": {"vram_24gb": 1}}})
    lines = list(cluster_checks(ctx.settings))
    nodes = [c for c in lines if c.name.startswith("node ") and "GPU(s)" in c.message]
    assert len(nodes) == 4 and sum("1 GPU(s)" in c.message for c in nodes) == 3
    assert [(c.status, c.name) for c in lines if c.name == "models.sdxl"] == [
        ("FAIL", "models.sdxl")]
    probed = [c for c in lines if c.name.startswith("node ") and "GPU(s)" not in c.message]
    assert len(probed) == 3  # one per GPU node: the SDXL file is no safetensors file anywhere
    assert all(c.status == "FAIL" and "base-sdxl.safetensors" in c.message for c in probed)


def test_a_lost_node_costs_only_the_epoch_in_progress(cluster, cluster_ctx, fake_trainer):
    control = fake_trainer(epoch_seconds=3.0)
    ctx = cluster_ctx()
    job_id = prepared_job(ctx, subject={"epochs": 3})
    driver = Driver(ctx)
    try:
        run_dir = ctx.paths(ctx.store.get(job_id)).run_dir(1)
        state = run_dir / "alice-000001-state" / "train_state.json"
        driver.wait_for("epoch 1 and its state received", state.exists)
        [first] = trainer_runs(control)
        assert first["pid"] not in trainer_exits(control)  # still in its second epoch
        where = ctx.store.get(job_id).train["runs"][0]["where"]
        node = next(n for n in cluster.worker_nodes if n.node_id[:8] in where)
        cluster.remove_node(node)
        driver.wait_for("the job done", lambda: all_final(ctx, [job_id]), timeout=90)
    finally:
        driver.close()
    job = ctx.store.get(job_id)
    assert job.state == "done" and job.attempts == 0
    runs = trainer_runs(control)
    assert len(runs) == 2
    assert arg(runs[1]["argv"], "--resume").endswith("alice-000001-state")
    assert not alive(first["pid"])
    assert whole_epochs(ctx, job_id) == [1, 2, 3]
    lost = [m for m in events(ctx, job_id) if "was lost" in m]
    assert lost and "continues on another machine from epoch 1" in lost[0]
    assert job.train["runs"][1]["where"] != where

