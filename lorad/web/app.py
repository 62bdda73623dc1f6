"""The web application: the routes, the guard in front of them, the static files."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from lorad.settings import Settings
from lorad.store import Job, Store
from lorad.web.login import login_routes
from lorad.web.routes_drop import drop_routes
from lorad.web.security import Guard
from lorad.web.site import HERE, Web


def create_app(settings: Settings, store: Store | None = None) -> Starlette:
    store = store or Store(settings.db_path)
    guard = Guard(_nothing, settings.web.secrets)  # its app is set when the stack is built
    web = Web(settings, store, guard)
    acting = {name: getattr(web, f"do_{name}") for name in ("pick", "resume", "retry", "cancel")}
    routes = [
        Route("/", web.jobs_page),
        Route("/live/jobs", web.jobs_live),
        Route("/api/jobs", web.jobs_json),
        Route("/jobs/{job_id:int}", web.job_page),
        Route("/jobs/{job_id:int}/live", web.job_live),
        Route("/jobs/{job_id:int}/files/{name:path}", web.job_file),
        *[Route(f"/jobs/{{job_id:int}}/{name}", _acting(web, action), methods=["POST"])
          for name, action in acting.items()],
        Route("/drop", web.drop_page),
        *drop_routes(web),
        *login_routes(web),
        Route("/metrics", web.metrics),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_SharedGuard, guard=guard)])
    app.state.web = web
    return app


def _acting(web: Web, action: Callable[[Job, dict[str, str]], tuple[str, int]]) -> Any:
    async def endpoint(request: Request) -> Response:
        return await web.act(request, action)
    return endpoint


async def _nothing(scope: Any, receive: Any, send: Any) -> None:
    raise RuntimeError("the guard's application was never set")


class _SharedGuard:
    """Guard as Starlette's middleware stack builds it, sharing the one the routes check CSRF
    tokens with."""

    def __init__(self, app: Any, guard: Guard) -> None:
        guard.app = app
        self.guard = guard

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.guard(scope, receive, send)
