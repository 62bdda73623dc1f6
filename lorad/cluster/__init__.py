"""Trainings on several machines: a Ray cluster behind the training executor seam.

Ray is imported only when `[cluster] engine = "ray"` is configured (pip install 'lorad[ray]').
"""

from __future__ import annotations

from lorad.errors import CannotStart
from lorad.settings import Settings
from lorad.store import Store
from lorad.training.executor import Executor, LocalExecutor


def make_executor(settings: Settings, store: Store) -> Executor:
    """Where this daemon's trainings run: this machine's `gpus`, or the configured cluster."""
    if settings.cluster.engine != "ray":
        return LocalExecutor(store, settings.gpus)
    try:
        from lorad.cluster.executor import RayExecutor

        return RayExecutor(settings)
    except ImportError as error:
        raise CannotStart(f"[cluster] engine = \"ray\" needs Ray ({error}); install it with: "
                          "pip install 'lorad[ray]'") from error
    except ConnectionError as error:
        raise CannotStart(f"cannot reach the Ray cluster at [cluster] address = "
                          f"{settings.cluster.address!r}: {error}; start it (ray start --head) "
                          "or fix the address") from error
