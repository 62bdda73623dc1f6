"""Running the web application under uvicorn, after refusing an unsafe address."""

from __future__ import annotations

import logging

import uvicorn

from lorad.errors import CannotStart
from lorad.settings import Settings
from lorad.system import logs
from lorad.web.app import create_app
from lorad.web.security import is_loopback
from lorad.web.upload import remove_leftovers

log = logging.getLogger("lorad")


def check_address(settings: Settings, host: str) -> None:
    if not is_loopback(host) and not settings.web.secrets:
        raise CannotStart(f"lorad web would listen on {host}, which other machines can reach, "
                          "without a secret: set [web] token or password in lorad.toml (or "
                          "listen on 127.0.0.1 behind a reverse proxy that checks who comes in)")


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    host = host or settings.web.host
    port = port or settings.web.port
    check_address(settings, host)
    logs.setup(settings.log_level)
    for path in remove_leftovers(settings.inbox):
        log.info("removed %s, a folder an earlier lorad web left half sent", path)
    app = create_app(settings)
    log.info("lorad web on http://%s:%d/", f"[{host}]" if ":" in host else host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                server_header=False, proxy_headers=True, timeout_graceful_shutdown=5)
