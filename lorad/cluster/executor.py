"""Trainings on a Ray cluster: `RayExecutor` and `RayRun`, behind the executor seam
(lorad.training.executor).

Each run is a Ray actor (lorad.cluster.remote.Trainer) asking for one GPU and its base model's
`resources`; Ray places it on a node that has them, or queues it until one is free. The run's
files travel (lorad.cluster.shipping) unless the node sees the coordinator's own files; the
trainer's output and each file it writes come back as they are written, into the run's local
folder, where the train stage harvests and publishes them as it does for a local run.

A node that is lost mid-run ends the run with `lost` set: the stage continues the job on another
node from the newest epoch that came back, and counts no attempt. The actors are named in a
namespace of this daemon's own (from its state_dir) and are not detached: when the daemon dies,
Ray ends them, and each one's guard stops its trainer; `recover()` at the next start kills any
that a client connection (ray://) kept alive meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import secrets
import threading
from pathlib import Path
from typing import Any

from lorad.cluster.remote import Trainer
from lorad.cluster.shipping import (
    Receiver,
    node_paths,
    outgoing,
    pieces_of,
    rewrite,
)
from lorad.settings import Settings
from lorad.system.logs import log
from lorad.training.executor import Chunk

PROBE_NAME = ".lorad-node-probe"


def namespace(settings: Settings) -> str:
    return "lorad-" + hashlib.sha1(str(settings.state_dir.resolve()).encode()).hexdigest()[:12]


def connect(settings: Settings) -> Any:
    """Ray, connected to the configured cluster (once per process)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=settings.cluster.address, namespace=namespace(settings),
                 logging_level="WARNING", log_to_driver=False)
    return ray


def requirement(settings: Settings, argv: list[str]) -> dict[str, float]:
    """The custom resources of the run's base model (its --pretrained_model_name_or_path)."""
    model = argv[argv.index("--pretrained_model_name_or_path") + 1] \
        if "--pretrained_model_name_or_path" in argv else None
    for entry in settings.models.values():
        if entry.path == model:
            return dict(entry.resources)
    return {}


def waiting_reason(ray: Any, resources: dict[str, float]) -> str:
    """Why a run is not placed yet, from what the cluster's live nodes have."""
    needed = {"GPU": 1.0, **resources}
    wanted = ", ".join(f"{k} {v:g}" for k, v in needed.items())
    for node in ray.nodes():
        have = node.get("Resources", {})
        if node.get("Alive") and all(have.get(k, 0) >= v for k, v in needed.items()):
            return f"waiting for a free place in the cluster ({wanted})"
    return (f"waiting: no node in the cluster has {wanted}; add such a node (ray start "
            "--resources) or change the model's resources")


class RayExecutor:
    """Every training on the cluster; Ray queues them (no slots here)."""

    slots: list[int] | None = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ray = connect(settings)
        self.shipped: dict[int, int] = {}  # job id -> bytes that travelled, both ways
        self._actor_class: Any = None

    def gpu_facts(self, gpu: int) -> tuple[bool, bool]:
        """A node's GPU is visible to its trainer; bf16 is not assumed (fp16 runs everywhere;
        kohya.mixed_precision = "bf16" asks for it)."""
        return True, False

    def recover(self) -> None:
        """Kill the trainer actors an earlier daemon of this state_dir left in the cluster."""
        ns = namespace(self.settings)
        for entry in self.ray.util.list_named_actors(all_namespaces=True):
            if entry.get("namespace") != ns:
                continue
            try:
                actor = self.ray.get_actor(entry["name"], namespace=ns)
            except ValueError:
                continue
            log.warning("stopping the training %s left running in the cluster by an earlier "
                        "daemon; its job continues from its last received epoch", entry["name"])
            self.ray.kill(actor, no_restart=True)

    def _trainer_class(self) -> Any:
        if self._actor_class is None:
            self._actor_class = self.ray.remote(Trainer)
        return self._actor_class

    def start(self, job_id: int, argv: list[str], *, cwd: Path, env: dict[str, str],
              gpu: int) -> RayRun:
        # The node keeps its own environment (PATH, CUDA_VISIBLE_DEVICES from Ray...); only what
        # lorad adds for the trainer travels: kohya.env and what differs from the daemon's own.
        extra = {k: v for k, v in env.items()
                 if os.environ.get(k) != v or k in self.settings.kohya.env}
        name = f"job-{job_id}-{secrets.token_hex(4)}"
        resources = requirement(self.settings, argv)
        actor = self._trainer_class().options(
            name=name, num_gpus=1, num_cpus=0, resources=resources or None, max_restarts=0,
            max_concurrency=1).remote(name, self.settings.cluster.scratch_dir)
        run = RayRun(self, job_id, actor, resources)
        run.begin(argv, str(cwd), extra)
        return run


class RayRun:
    """One training on a node, followed from the coordinator by one thread."""

    def __init__(self, executor: RayExecutor, job_id: int, actor: Any,
                 resources: dict[str, float]) -> None:
        self.executor = executor
        self.ray = executor.ray
        self.job_id = job_id
        self.actor = actor
        self.resources = resources
        self.where = "waiting for a place in the cluster"
        self.placed = False
        self.lost: str | None = None
        self.exit_code: int | None = None
        self.chunks: queue.Queue[Chunk] = queue.Queue()
        self.stopping = threading.Event()
        self.done = threading.Event()
        self.shipped = 0
        self.grace = executor.settings.kohya.stop_grace_seconds

    def begin(self, argv: list[str], cwd: str, env: dict[str, str]) -> None:
        threading.Thread(target=self._follow, args=(argv, cwd, env), daemon=True,
                         name=f"lorad-ray-{self.job_id}").start()

    # ---- the following thread ----------------------------------------------------------------
    def _follow(self, argv: list[str], cwd: str, env: dict[str, str]) -> None:
        exceptions = self.ray.exceptions
        try:
            info = self._place(argv)
            if info is not None:
                self._run(info, argv, cwd, env)
        except (exceptions.RayActorError, exceptions.ActorUnavailableError,
                exceptions.NodeDiedError) as error:
            if not self.stopping.is_set():
                self.lost = f"the node it ran on ({self.where}) was lost: {type(error).__name__}"
        except Exception as error:  # on this side: the run fails like a crash, with the reason
            log.exception("job %d: following its training in the cluster failed", self.job_id)
            self.chunks.put(("err", f"lorad: following the run in the cluster failed: "
                                    f"{error}\n".encode()))
            self.exit_code = 1
        finally:
            self.executor.shipped[self.job_id] = (self.executor.shipped.get(self.job_id, 0)
                                                  + self.shipped)
            self.chunks.put(("out", b""))
            self.chunks.put(("err", b""))
            self.done.set()

    def _place(self, argv: list[str]) -> dict[str, Any] | None:
        """Wait until Ray has placed the actor (saying why it waits meanwhile); its node."""
        run_dir = Path(argv[argv.index("--output_dir") + 1])
        nonce = secrets.token_hex(8)
        probe = run_dir / PROBE_NAME
        probe.write_text(nonce)
        ship = self.executor.settings.cluster.ship
        ref = self.actor.hello.remote(None if ship == "always" else (str(probe), nonce))
        while not self.stopping.is_set():
            ready, _ = self.ray.wait([ref], timeout=1.0)
            if ready:
                info = self.ray.get(ref)
                probe.unlink(missing_ok=True)
                self.where = f"node {info['node_id'][:8]} ({info['host']}, {info['ip']})"
                self.placed = True
                return info
            self.where = waiting_reason(self.ray, self.resources)
        probe.unlink(missing_ok=True)
        return None

    def _run(self, info: dict[str, Any], argv: list[str], cwd: str, env: dict[str, str]) -> None:
        local_out = Path(argv[argv.index("--output_dir") + 1])
        collect, skip = None, []
        if not info["shared"]:
            scratch = info["scratch"]
            mapping = node_paths(argv, scratch)
            files = outgoing(mapping, scratch)
            for path, relative in files:
                for piece in pieces_of(path, relative):
                    self.ray.get(self.actor.receive.remote(piece))
                    self.shipped += len(piece.data)
            argv = rewrite(argv, mapping)
            collect = mapping[str(local_out)]
            skip = [rel.removeprefix("run/") for _, rel in files if rel.startswith("run/")]
        self.ray.get(self.actor.start.remote(argv, cwd, env, self.grace, collect, skip))
        receiver = Receiver(local_out)
        while True:
            answer = self.ray.get(self.actor.poll.remote(0.5))
            for name in ("out", "err"):
                if answer[name]:
                    self.chunks.put((name, answer[name]))
            for piece in answer["pieces"]:
                receiver.take(piece)
            self.shipped += sum(len(p.data) for p in answer["pieces"])
            if answer["exit"] is not None:
                self.exit_code = answer["exit"]
                return

    # ---- the seam ----------------------------------------------------------------------------
    def output(self, timeout: float) -> Chunk | None:
        try:
            return self.chunks.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self, grace: float) -> None:
        self.stopping.set()
        if self.placed:
            try:
                self.ray.get(self.actor.stop.remote(grace), timeout=grace + 60)
            except Exception as error:  # the node went meanwhile: its guard stops the trainer
                log.warning("job %d: stopping its trainer on %s: %s", self.job_id, self.where,
                            error)
        else:
            self.ray.kill(self.actor, no_restart=True)
        self.done.wait(grace + 60)

    def wait(self) -> int:
        self.done.wait()
        return self.exit_code if self.exit_code is not None else -1

    def release(self) -> None:
        if self.placed:  # a node that is gone took its trainer (stopped by its guard) with it
            with contextlib.suppress(Exception):
                self.ray.get(self.actor.cleanup.remote(), timeout=30)
        self.ray.kill(self.actor, no_restart=True)
