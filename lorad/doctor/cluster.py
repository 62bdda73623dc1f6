"""The Ray cluster, when `[cluster] engine = "ray"`: the nodes, their GPUs and resources, a node
for every base model's resources, and on every node (a probe task pinned to it) that sd-scripts,
its python and each base model are there with the right family. One line per problem."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from lorad.doctor.check import FAIL, OK, WARN, Check
from lorad.settings import Settings

PROBE_SECONDS = 60.0


def probe(settings: Settings) -> list[str]:
    """On a node: what is missing or wrong there (empty: all is well)."""
    from lorad.doctor.models import base_model

    kohya = settings.kohya
    problems = []
    if not kohya.sd_scripts.is_dir():
        problems.append(f"{kohya.sd_scripts} (kohya.sd_scripts) is not a folder")
    python = kohya.python_path()
    if not os.access(python, os.X_OK):
        problems.append(f"{python} (kohya.python) is not an executable file")
    for name, model in settings.models.items():
        found = base_model(f"models.{name}", model)
        if found.status != OK:
            problems.append(found.message)
    return problems


def cluster(settings: Settings) -> Iterator[Check]:
    if settings.cluster.engine != "ray":
        return
    try:
        from lorad.cluster.executor import connect

        ray = connect(settings)
    except ImportError as error:
        yield Check(FAIL, "cluster", f"Ray is not installed ({error}); pip install 'lorad[ray]'")
        return
    except Exception as error:
        yield Check(FAIL, "cluster", f"cannot reach the Ray cluster at {settings.cluster.address}"
                                     f" ({error}); start it (ray start --head) or fix "
                                     "cluster.address")
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    yield from node_lines(nodes)
    yield from placements(settings, nodes)
    yield from probes(ray, settings, [n for n in nodes if n["Resources"].get("GPU", 0) >= 1])


def node_lines(nodes: list[dict[str, Any]]) -> Iterator[Check]:
    if not any(n["Resources"].get("GPU", 0) >= 1 for n in nodes):
        yield Check(FAIL, "cluster", f"{len(nodes)} node(s), none with a GPU: no training can "
                                     "start; start a worker on a GPU machine (ray start "
                                     "--address=HEAD:6379)")
    for node in nodes:
        have = node["Resources"]
        extra = {k: v for k, v in have.items()
                 if k not in ("CPU", "GPU", "memory", "object_store_memory")
                 and not k.startswith(("node:", "accelerator_type"))}
        extras = ", ".join(f"{k} {v:g}" for k, v in sorted(extra.items())) or "no custom resources"
        yield Check(OK, f"node {node['NodeID'][:8]}",
                    f"{node['NodeManagerHostname']} ({node['NodeManagerAddress']}): "
                    f"{have.get('GPU', 0):g} GPU(s), {extras}")


def placements(settings: Settings, nodes: list[dict[str, Any]]) -> Iterator[Check]:
    for name, model in settings.models.items():
        needed = {"GPU": 1.0, **model.resources}
        if not any(all(n["Resources"].get(k, 0) >= v for k, v in needed.items()) for n in nodes):
            wanted = ", ".join(f"{k} {v:g}" for k, v in needed.items())
            yield Check(FAIL, f"models.{name}", f"no node in the cluster has {wanted}: its jobs "
                                                "would wait; start a node with them (ray start "
                                                "--resources) or change its resources")


def probes(ray: Any, settings: Settings, nodes: list[dict[str, Any]]) -> Iterator[Check]:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(probe)
    refs = {node["NodeID"]: task.options(
        num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
    ).remote(settings) for node in nodes}
    for node_id, ref in refs.items():
        label = f"node {node_id[:8]}"
        try:
            problems = ray.get(ref, timeout=PROBE_SECONDS)
        except Exception as error:
            yield Check(WARN, label, f"the probe did not come back ({error}); is lorad installed "
                                     "there, in the same version?")
            continue
        for problem in problems:
            yield Check(FAIL, label, f"{problem}: every node needs sd-scripts, its python and "
                                     "the base models at the configured paths")
        if not problems:
            yield Check(OK, label, "sd-scripts, its python and every base model are there")
