"""Who may use the page: every request is checked here before any route sees it.

- Without `[web] token` or `password`, only this machine: a loopback client asking for a loopback
  host name (so a web page elsewhere cannot reach it through DNS rebinding either). `lorad web`
  refuses to listen on any other address without one of them.
- With one, every request carries it: `Authorization: Bearer <secret>`, or the session cookie
  the login form sets (an HMAC of the secret: changing the secret logs everyone out).
- A request that changes something (any method but GET and HEAD) must come from this site: its
  `Origin` (or `Referer`) names the host it was sent to, and a form's `csrf` field or the
  `X-CSRF-Token` header carries the process's CSRF token (not needed with a bearer header, which
  a browser never adds by itself).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "lorad_session"
OPEN_PATHS = ("/login", "/static/")
SAFE_METHODS = ("GET", "HEAD")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(authority: str) -> str:
    """"localhost:8765" -> "localhost", "[::1]:80" -> "::1"."""
    return urlsplit(f"//{authority}").hostname or ""


class Guard:
    """The ASGI middleware that applies the rules above."""

    def __init__(self, app: ASGIApp, secrets_: list[str]) -> None:
        self.app = app
        self.secrets = [s.encode() for s in secrets_]
        self.csrf = secrets.token_urlsafe(32)

    def session_value(self, secret: bytes) -> str:
        return hmac.new(secret, b"lorad-web-session-1", hashlib.sha256).hexdigest()

    def check_secret(self, given: str) -> str | None:
        """The session cookie for a correct secret, else None."""
        for secret in self.secrets:
            if hmac.compare_digest(given.encode(), secret):
                return self.session_value(secret)
        return None

    def bearer(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.check_secret(value.strip()) is not None

    def signed_in(self, request: Request) -> bool:
        cookie = request.cookies.get(COOKIE, "")
        return any(hmac.compare_digest(cookie, self.session_value(s)) for s in self.secrets)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        scope.setdefault("state", {})["bearer"] = False
        refusal = self.refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def refusal(self, request: Request) -> Response | None:
        if not self.secrets:
            client = request.client.host if request.client else ""
            if not (is_loopback(client) and is_loopback(host_name(request.headers.get(
                    "host", "")))):
                return PlainTextResponse(
                    "lorad web answers only this machine (127.0.0.1, localhost) unless "
                    "[web] token or password is set in lorad.toml", status_code=403)
        elif not request.url.path.startswith(OPEN_PATHS):
            if self.bearer(request):
                request.scope["state"]["bearer"] = True
            elif not self.signed_in(request):
                return self.ask_to_sign_in(request)
        if request.method not in SAFE_METHODS and not self.same_origin(request):
            return PlainTextResponse("refused: this request came from another site (its Origin "
                                     "is not this page's)", status_code=403)
        return None

    def ask_to_sign_in(self, request: Request) -> Response:
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            target = quote(request.url.path + (f"?{request.url.query}" if request.url.query
                                               else ""), safe="")
            return RedirectResponse(f"/login?next={target}", status_code=303)
        return PlainTextResponse("sign in: Authorization: Bearer <[web] token>",
                                 status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @staticmethod
    def same_origin(request: Request) -> bool:
        """Origin (or, without it, Referer) names the host the request was sent to; a request
        with neither is a bearer client's, or refused by the CSRF token."""
        origin = request.headers.get("origin") or request.headers.get("referer")
        if not origin:
            return True
        return urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()

    def csrf_ok(self, request: Request, given: str | None) -> bool:
        """The form's or header's CSRF token is this process's (or the request is a bearer
        client's)."""
        if request.scope.get("state", {}).get("bearer"):
            return True
        given = given or request.headers.get("x-csrf-token", "")
        return hmac.compare_digest(given.encode(), self.csrf.encode())
