"""Can a training start, and if not why: decided from the settings at start and at every reload,
consulted by the scheduler before it gives a job a GPU slot.

Only what is cheap and certain is looked at (the Kohya folder, its train script, its python,
each base model's file or folder); nothing is run. A job whose training cannot start waits at
the train stage with the reason as its progress text, and starts by itself once a reload fixes
it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lorad.doctor.check import hub_name
from lorad.doctor.kohya import setup_problem
from lorad.settings import Settings


@dataclass(frozen=True)
class Readiness:
    kohya: str | None = None  # why no training at all can start
    models: dict[str, str] = field(default_factory=dict)  # model name -> why it cannot be used
    configured: frozenset[str] = frozenset()  # the [models] tables

    def blocker(self, model: str | None) -> str | None:
        """Why a training on `model` cannot start now, or None when it can."""
        if self.kohya is not None:
            return self.kohya
        if model is not None and model not in self.configured:
            return (f"the base model {model!r} has no [models.{model}] table; add one with its "
                    "path and family (lorad init finds the models on this machine)")
        return self.models.get(model or "")

    def problems(self) -> list[str]:
        """Each problem once, for the log."""
        found = [self.kohya] if self.kohya else []
        if not self.configured:
            found.append("no [models] table, so there is no base model to train on; add one, "
                         "e.g. [models.sd15] with path and family")
        return found + list(self.models.values())


def assess(settings: Settings) -> Readiness:
    # A model that exists but may be of the wrong family or damaged is doctor's to say: the
    # header is not read here, and only a certain absence holds the jobs back.
    models = {name: f"models.{name}.path ({model.path}) does not exist; fix models.{name}.path"
              for name, model in settings.models.items()
              if not Path(model.path).exists() and not hub_name(model.path)}
    return Readiness(setup_problem(settings), models, frozenset(settings.models))
