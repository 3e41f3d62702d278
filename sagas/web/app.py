"""The console's Starlette app: the page, its assets, and the JSON API under ``/api/``.

:func:`create_app` builds it over an open saga store (the caller opens and closes it); every
answer reads the store when asked (no cache, so the page is live), in a worker thread, and
every request passes :class:`~sagas.web.security.GuardMiddleware` first. The routes and their
shapes are listed in :data:`ROUTES` and in the README (*The web console*).
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import __version__
from ..commands.dead_letters import dead_letters
from ..commands.errors import UsageProblem, one_line
from ..errors import InputError, StoreError, UnknownSaga
from ..remote.broker import BrokerError, masked_url
from ..stores import SagaStore
from . import views
from .security import COOKIE, Guard, GuardMiddleware

__all__ = ["ROUTES", "STATIC", "create_app"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
ROUTES = {
    "GET /api/info": "the store (URL masked), the broker if any, the version",
    "GET /api/session": "{csrf}: the token a POST sends in X-CSRF-Token",
    "GET /api/sagas": "a page of sagas (saga list --json rows with reason); filters: status, "
                      "flow, reason, since, until, prefix; limit, offset; X-More: 1 if more",
    "GET /api/sagas/{id}": "saga show --json",
    "GET /api/sagas/{id}/graph": "the flow's diagram with the saga on it",
    "POST /api/sagas/{id}/cancel": "record a cancel request (saga cancel from another shell)",
    "POST /api/sagas/{id}/retry": "record a retry request (saga retry from another shell)",
    "POST /api/sagas/cancel": "bulk: {filter} or {saga_ids}, dry_run to preview",
    "POST /api/sagas/retry": "bulk: {filter} or {saga_ids}, dry_run to preview",
    "GET /api/flows": "the flow definitions the sagas run on, with versions and sha256",
    "GET /api/definitions/{sha256}": "one stored flow text",
    "GET /api/stuck?after=S": "saga audit --stuck-after S's stuck and orphaned, and stalled",
    "GET /api/members": "saga members --json",
    "GET /api/dead-letters?service=S": "saga dead-letters list --json (with a broker)",
    "POST /api/dead-letters/replay": "{ids} or {all: true}, service: saga dead-letters replay",
    "POST /api/dead-letters/purge": "{ids} or {all: true}, service: saga dead-letters purge",
}


def _json(document: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(document, status_code=status, headers=headers)


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, Response | None]:
    """Run ``fn`` in a worker thread; its result, or the error answer it ended in."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs), None
    except UnknownSaga as exc:
        return None, _error(404, one_line(exc))
    except views.NotFound as exc:
        return None, _error(404, one_line(exc))
    except (InputError, UsageProblem) as exc:
        return None, _error(400, one_line(exc))
    except StoreError as exc:
        return None, _error(503, one_line(exc))
    except BrokerError as exc:
        return None, _error(503, one_line(exc))
    except Exception as exc:
        log.exception("console: %s failed", getattr(fn, "__name__", fn))
        return None, _error(500, f"internal error: {type(exc).__name__}")


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InputError("the request body must be a JSON object") from None
    if not isinstance(document, dict):
        raise InputError("the request body must be a JSON object")
    return document


def _login_page(guard: Guard, next_path: str, problem: str | None = None) -> str:
    shown = f'<p class="problem">{html.escape(problem)}</p>' if problem else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>saga ui: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/console.css"></head>
<body class="login"><main><h1>sagactor console</h1>
<p>This console needs its token (<code>SAGA_UI_TOKEN</code>, or the file given to
<code>--token-file</code>).</p>{shown}
<form method="post" action="/login">
<input type="hidden" name="csrf" value="{html.escape(guard.csrf)}">
<input type="hidden" name="next" value="{html.escape(next_path)}">
<label>Token <input type="password" name="token" autocomplete="current-password" autofocus
required></label> <button type="submit">Log in</button></form></main></body></html>
"""


def _safe_next(path: str | None) -> str:
    """Where to go after logging in: a path of this console only (never another site)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return quote(path, safe="/#?=&")


def create_app(store: SagaStore, guard: Guard, *, broker_url: str | None = None) -> Starlette:
    """The console over ``store`` (open; the caller closes it), guarded by ``guard``; with
    ``broker_url``, the dead letters of that broker too."""
    page = (STATIC / "index.html").read_text(encoding="utf-8").replace(
        "{{csrf}}", html.escape(guard.csrf))

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"cache-control": "no-store"})

    async def login(request: Request) -> Response:
        if guard.token is None:
            return RedirectResponse("/", status_code=303)
        if request.method == "GET":
            return HTMLResponse(_login_page(guard, _safe_next(request.query_params.get("next"))))
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        next_path = _safe_next((form.get("next") or ["/"])[0])
        if not guard.csrf_ok((form.get("csrf") or [None])[0]):
            return HTMLResponse(_login_page(guard, next_path, "The form expired: try again."),
                                status_code=403)
        if not guard.token_ok({"authorization": "Bearer " + (form.get("token") or [""])[0]}):
            await asyncio.sleep(0.5)  # slow down guessing
            return HTMLResponse(_login_page(guard, next_path, "Wrong token."), status_code=401)
        answer = RedirectResponse(next_path, status_code=303)
        answer.set_cookie(COOKIE, guard.token, httponly=True, samesite="strict", path="/")
        return answer

    async def logout(request: Request) -> Response:
        answer = _json({"logged_out": True})
        answer.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return answer

    async def info(request: Request) -> Response:
        return _json({"store": store.url, "broker": masked_url(broker_url) if broker_url
                      else None, "version": __version__, "token": guard.token is not None,
                      "dead_letters": broker_url is not None, "routes": ROUTES})

    async def session(request: Request) -> Response:
        return _json({"csrf": guard.csrf})

    async def list_sagas(request: Request) -> Response:
        try:
            chosen = views.SagaFilter.of(request.query_params)
            limit, offset = views.page_of(request.query_params)
        except InputError as exc:
            return _error(400, one_line(exc))
        found, failed = await _call(views.saga_rows, store, chosen, limit, offset)
        if failed is not None:
            return failed
        rows, more = found
        return _json(rows, headers={"x-more": "1" if more else "0",
                                    "x-offset": str(offset), "x-limit": str(limit)})

    async def show_saga(request: Request) -> Response:
        found, failed = await _call(views.saga_show, store, request.path_params["saga_id"])
        return failed or _json(found)

    async def saga_graph(request: Request) -> Response:
        found, failed = await _call(views.saga_graph, store, request.path_params["saga_id"])
        return failed or _json(found)

    async def act_on_saga(request: Request) -> Response:
        found, failed = await _call(views.act_on, store, request.path_params["saga_id"],
                                    request.path_params["action"])
        return failed or _json(found)

    async def act_on_many(request: Request) -> Response:
        try:
            body = await _body(request)
            ids = body.get("saga_ids")
            if ids is not None and (not isinstance(ids, list)
                                    or not all(isinstance(i, str) for i in ids)):
                raise InputError("saga_ids must be a list of saga ids")
            given = body.get("filter")
            if given is not None and not isinstance(given, dict):
                raise InputError("filter must be a JSON object")
            if ids is None and given is None:
                raise InputError("give the sagas: {\"filter\": {...}} or {\"saga_ids\": [...]}")
            chosen = views.SagaFilter.of(given) if given is not None else None
            limit = body.get("limit", 1000)
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise InputError("limit must be a whole number")
            dry_run = body.get("dry_run", False) is True
        except InputError as exc:
            return _error(400, one_line(exc))
        found, failed = await _call(views.act_on_many, store, request.path_params["action"],
                                    chosen=chosen, saga_ids=ids, dry_run=dry_run, limit=limit)
        return failed or _json(found)

    async def flows(request: Request) -> Response:
        found, failed = await _call(views.known_flows, store)
        return failed or _json(found)

    async def definition(request: Request) -> Response:
        found, failed = await _call(views.definition, store, request.path_params["sha256"])
        return failed or _json(found)

    async def stuck(request: Request) -> Response:
        try:
            after = views.number("after", request.query_params.get("after"))
        except InputError as exc:
            return _error(400, one_line(exc))
        found, failed = await _call(views.stuck_sagas, store,
                                    views.DEFAULT_STUCK_AFTER if after is None else after)
        return failed or _json(found)

    async def members(request: Request) -> Response:
        found, failed = await _call(views.members, store)
        return failed or _json(found)

    async def list_dead_letters(request: Request) -> Response:
        if broker_url is None:
            return _error(404, "no broker: start saga ui with --broker URL (SAGA_BROKER) to "
                               "see the dead letters")
        service = request.query_params.get("service") or None
        found, failed = await _call(dead_letters, "list", broker_url, service)
        return failed or _json(found.to_json())

    async def act_on_dead_letters(request: Request) -> Response:
        if broker_url is None:
            return _error(404, "no broker: start saga ui with --broker URL (SAGA_BROKER) to "
                               "act on dead letters")
        if request.path_params["action"] not in ("replay", "purge"):
            return _error(404, "dead letters are replayed or purged")
        try:
            body = await _body(request)
            ids = body.get("ids") or []
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise InputError("ids must be a list of entry ids")
            service = body.get("service")
            if service is not None and not isinstance(service, str):
                raise InputError("service must be a string")
        except InputError as exc:
            return _error(400, one_line(exc))
        found, failed = await _call(dead_letters, request.path_params["action"], broker_url,
                                    service or None, tuple(ids), body.get("all") is True)
        return failed or _json(found.to_json())

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/api/info", info, methods=["GET"]),
        Route("/api/session", session, methods=["GET"]),
        Route("/api/sagas", list_sagas, methods=["GET"]),
        Route("/api/sagas/{action:str}", act_on_many, methods=["POST"]),
        Route("/api/sagas/{saga_id:str}", show_saga, methods=["GET"]),
        Route("/api/sagas/{saga_id:str}/graph", saga_graph, methods=["GET"]),
        Route("/api/sagas/{saga_id:str}/{action:str}", act_on_saga, methods=["POST"]),
        Route("/api/flows", flows, methods=["GET"]),
        Route("/api/definitions/{sha256:str}", definition, methods=["GET"]),
        Route("/api/stuck", stuck, methods=["GET"]),
        Route("/api/members", members, methods=["GET"]),
        Route("/api/dead-letters", list_dead_letters, methods=["GET"]),
        Route("/api/dead-letters/{action:str}", act_on_dead_letters, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(GuardMiddleware, guard=guard)])
