"""The routes of a folder dropped through the page: announce, send each file, finish."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lorad.errors import RequestError

if TYPE_CHECKING:
    from lorad.web.site import Web

MAX_ANNOUNCE_BYTES = 2 * 1024 * 1024


def drop_routes(web: Web) -> list[Route]:
    def checked(request: Request) -> None:
        if not web.guard.csrf_ok(request, None):
            raise HTTPException(403, "the page is out of date (lorad web restarted): reload it")

    def refused(error: RequestError, status: int = 400) -> Response:
        return JSONResponse({"error": str(error)}, status_code=status)

    async def start(request: Request) -> Response:
        checked(request)
        body = await request.body()
        if len(body) > MAX_ANNOUNCE_BYTES:
            return refused(RequestError("too many files announced"), 413)
        try:
            data: dict[str, Any] = await request.json()
            upload, skipped = web.uploads.start(
                str(data.get("name", "")), list(data.get("files", [])),
                str(data.get("token", "")).strip(), str(data.get("model", "")).strip(),
                str(data.get("epochs", "")).strip())
        except RequestError as error:
            return refused(error)
        except (ValueError, TypeError, AttributeError):
            return refused(RequestError("the announcement is not the JSON this page sends"))
        return JSONResponse({"id": upload.id, "send": sorted(upload.sizes), "skipped": skipped})

    async def receive(request: Request) -> Response:
        checked(request)
        try:
            size = await web.uploads.receive(request.path_params["upload_id"],
                                             request.query_params.get("path", ""),
                                             request.stream())
        except RequestError as error:
            return refused(error)
        return JSONResponse({"size": size})

    async def finish(request: Request) -> Response:
        checked(request)
        try:
            target = web.uploads.finish(request.path_params["upload_id"])
        except RequestError as error:
            return refused(error, 409)
        return JSONResponse({"folder": target.name})

    async def abandon(request: Request) -> Response:
        checked(request)
        web.uploads.abandon(request.path_params["upload_id"])
        return JSONResponse({})

    return [Route("/drop/start", start, methods=["POST"]),
            Route("/drop/{upload_id:str}/file", receive, methods=["PUT"]),
            Route("/drop/{upload_id:str}/finish", finish, methods=["POST"]),
            Route("/drop/{upload_id:str}/abandon", abandon, methods=["POST"])]
