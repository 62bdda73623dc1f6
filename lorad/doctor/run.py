"""`lorad doctor`: checks the configuration and the machine, one line per finding, in order.

Each check says what it found and what to do about it, with a status: OK, WARN (lorad works, but
not as well as it could) or FAIL (lorad cannot do its work). Nothing is changed (the claiming
check moves an empty temporary folder out of the inbox and back), and nothing is sent unless a
test notification is asked for. Checks are generators so that the command prints
each line as soon as it is known (starting Kohya's trainer takes a while).

The checks live in one module per kind of finding (folders, watching, disk, database, kohya,
models, blip, gpus, cluster, notifications); this module holds their order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lorad.doctor.blip import blip
from lorad.doctor.check import FAIL, OK, Check
from lorad.doctor.cluster import cluster
from lorad.doctor.database import database
from lorad.doctor.disk import disk_space
from lorad.doctor.folders import folders
from lorad.doctor.gpus import cpu_training, gpus, uvm_device
from lorad.doctor.kohya import kohya, presets
from lorad.doctor.models import models
from lorad.doctor.notifications import notifications
from lorad.doctor.watching import watching
from lorad.settings import ConfigError, default_config_paths, find_config, load_settings


def run_checks(config_path: Path | None, *, send_test: bool = False) -> Iterator[Check]:
    """Every check, in order; a configuration that cannot be read is the only line."""
    try:
        settings = load_settings(config_path)
        source = find_config(config_path)
    except ConfigError as error:
        found = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        yield Check(FAIL, "configuration",
                    f"{found}; fix it (the other checks need a valid configuration)")
        return
    if source is None:
        looked = ", ".join(map(str, default_config_paths()))
        yield Check(OK, "configuration", f"no configuration file (looked for {looked}): the "
                                         "defaults and LORAD_* variables are used; `lorad init` "
                                         "writes a file to edit")
    else:
        yield Check(OK, "configuration", f"{source} is valid")
    yield from folders(settings)
    yield from watching(settings)
    yield from disk_space(settings)
    yield database(settings)
    yield from kohya(settings)
    yield from presets(settings)
    yield from models(settings)
    yield blip(settings)
    yield from gpus(settings)
    on_cpu = cpu_training(settings)
    if on_cpu is not None:
        yield on_cpu
    uvm = uvm_device()
    if uvm is not None:
        yield uvm
    yield from cluster(settings)
    yield from notifications(settings, send_test)
