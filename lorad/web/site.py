"""The routes' work: pages, their live parts, the actions, files and metrics.

Reading pages run in the thread pool (each thread has its own SQLite connection); actions call
`lorad.actions`, exactly as the CLI commands do.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.process_collector import ProcessCollector
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.templating import Jinja2Templates

from lorad import actions
from lorad.context import Context
from lorad.errors import RequestError
from lorad.settings import Settings
from lorad.store import Job, JobNotFound, Store
from lorad.web import detail
from lorad.web.files import NotServed, content_type, open_served, read_chunks
from lorad.web.jobs import STATES, counts, job_rows
from lorad.web.metrics import StoreCollector
from lorad.web.security import Guard
from lorad.web.upload import Uploads

HERE = Path(__file__).parent
LIVE_PARTS = ("head", "grid", "loss", "log", "events", "notes")


class Web:
    """What every route needs: the configuration, the store, the templates, the guard."""

    def __init__(self, settings: Settings, store: Store, guard: Guard) -> None:
        self.settings = settings
        self.store = store
        self.guard = guard
        self.templates = Jinja2Templates(directory=HERE / "templates")
        self.templates.env.globals["csrf"] = guard.csrf
        self.uploads = Uploads(settings)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StoreCollector(settings, store))
        ProcessCollector(registry=self.registry)

    def job(self, request: Request) -> Job:
        try:
            return self.store.get(int(request.path_params["job_id"]))
        except JobNotFound:
            raise HTTPException(404, f"no job {request.path_params['job_id']}") from None

    def render(self, request: Request, name: str, **context: Any) -> Response:
        context.update(said=request.query_params.get("said"),
                       error=request.query_params.get("error"), secured=bool(self.guard.secrets))
        return self.templates.TemplateResponse(request, name, context)

    def fragment(self, name: str, **context: Any) -> str:
        return self.templates.env.get_template(name).render(csrf=self.guard.csrf, **context)

    # ---- pages --------------------------------------------------------------------------
    def jobs_page(self, request: Request) -> Response:
        state = self.state_filter(request)
        return self.render(request, "jobs.html", rows=job_rows(self.store, state), state=state,
                           states=STATES, counts=counts(self.store))

    def jobs_live(self, request: Request) -> Response:
        state = self.state_filter(request)
        html = self.fragment("_jobs_table.html", rows=job_rows(self.store, state))
        return JSONResponse({"table": html})

    def jobs_json(self, request: Request) -> Response:
        return JSONResponse(job_rows(self.store, self.state_filter(request)))

    @staticmethod
    def state_filter(request: Request) -> str | None:
        state = request.query_params.get("state") or None
        return state if state in STATES else None

    def job_page(self, request: Request) -> Response:
        job = self.job(request)
        with self.store.snapshot():
            data = detail.page(self.settings, self.store, job)
        return self.render(request, "job.html", **data)

    def job_live(self, request: Request) -> Response:
        job = self.job(request)
        with self.store.snapshot():
            data = detail.live(self.settings, self.store, job)
        parts = {part: self.fragment(f"_job_{part}.html", **data) for part in LIVE_PARTS}
        return JSONResponse({"state": job.state, "parts": parts})

    def job_file(self, request: Request) -> Response:
        job = self.job(request)
        name = request.path_params["name"]
        try:
            fd, size = open_served(job, name)
        except NotServed as error:
            raise HTTPException(404, str(error)) from None
        download = request.query_params.get("download") == "1" or name.endswith(".safetensors")
        headers = {"content-length": str(size), "x-content-type-options": "nosniff",
                   "cache-control": "no-cache"}
        if download:
            headers["content-disposition"] = f'attachment; filename="{Path(name).name}"'
        return StreamingResponse(read_chunks(fd), media_type=content_type(name), headers=headers)

    def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    def drop_page(self, request: Request) -> Response:
        return self.render(request, "drop.html", models=sorted(self.settings.models),
                           default_model=self.settings.default_model, limits=self.settings.web)

    # ---- actions ------------------------------------------------------------------------
    async def form(self, request: Request) -> dict[str, str]:
        form = await request.form()
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        if not self.guard.csrf_ok(request, values.get("csrf")):
            raise HTTPException(403, "the form is out of date (lorad web restarted): reload the "
                                     "page and try again")
        return values

    async def act(self, request: Request,
                  action: Callable[[Job, dict[str, str]], tuple[str, int]]) -> Response:
        """Run one action from a form; back to the job's page with what it did or why not."""
        job = self.job(request)
        values = await self.form(request)
        try:
            said, target = await run_in_threadpool(action, job, values)
        except RequestError as error:
            return RedirectResponse(f"/jobs/{job.id}?{urlencode({'error': str(error)})}", 303)
        return RedirectResponse(f"/jobs/{target}?{urlencode({'said': said})}", 303)

    def context(self) -> Context:
        return Context(self.settings, self.store)

    def do_pick(self, job: Job, values: dict[str, str]) -> tuple[str, int]:
        epoch = number(values.get("epoch"), "epoch")
        final = actions.pick(self.context(), job, epoch)
        return f"epoch {epoch} is now {final.name}", job.id

    def do_resume(self, job: Job, values: dict[str, str]) -> tuple[str, int]:
        epochs = number(values.get("epochs"), "epochs")
        start = number(values["from"], "from") if values.get("from") else None
        child = actions.resume(self.context(), job, epochs, start)
        return (f"job {child.id} queued: epochs {child.train['start_epoch'] + 1} to "
                f"{child.train['target']}, from epoch {child.train['start_epoch']}", child.id)

    def do_retry(self, job: Job, values: dict[str, str]) -> tuple[str, int]:
        found = actions.retry(self.store, job)
        return f"job {found.id} queued again at the {found.stage} stage", job.id

    def do_cancel(self, job: Job, values: dict[str, str]) -> tuple[str, int]:
        found = actions.cancel(self.store, job)
        return ("cancelled" if found.state == "cancelled" else
                f"cancel requested; the {found.stage} stage stops within seconds"), job.id


def number(value: str | None, name: str) -> int:
    if not value or not value.strip().isdigit():
        raise RequestError(f"{name} must be a whole number (got {value!r})")
    return int(value)
