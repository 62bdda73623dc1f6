"""The login form (with `[web] token` or `password` set): a correct secret sets the session
cookie; signing out clears it."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from lorad.web.security import COOKIE

if TYPE_CHECKING:
    from lorad.web.site import Web

SESSION_DAYS = 30


def safe_next(target: str | None) -> str:
    """Only a path of this site: never another site's address (an open redirect)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


def login_routes(web: Web) -> list[Route]:
    def login_page(request: Request) -> Response:
        return web.render(request, "login.html", next=safe_next(request.query_params.get("next")))

    async def login(request: Request) -> Response:
        form = await request.form()
        target = safe_next(str(form.get("next") or "/"))
        cookie = web.guard.check_secret(str(form.get("secret") or ""))
        if not web.guard.csrf_ok(request, str(form.get("csrf") or "")) or cookie is None:
            query = urlencode({"next": target, "error": "wrong token or password"})
            return RedirectResponse(f"/login?{query}", status_code=303)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, cookie, max_age=SESSION_DAYS * 86400, httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    return [Route("/login", login_page, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"])]
