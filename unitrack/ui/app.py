"""``unitrack ui``: a read-only web app over any backend (Starlette, served by uvicorn).

The app is thin: each route asks the :class:`~unitrack.ui.data.Source` (the run catalog, one run, series)
and returns JSON; figures are plotly JSON built by :mod:`unitrack.ui.figures` and drawn by the page with the
plotly.js that the ``plotly`` wheel ships. Only GET requests exist: the view never writes to the store.

JSON API (every route takes its arguments as query parameters; repeat a parameter for a list):

======================  ======================================================================================
``GET /api``             this list
``GET /api/runs``        the run catalog: ``filter`` (``view -f`` grammar, repeatable). Returns ``columns``,
                         ``rows`` (``[uid, ...]`` in column order), ``count``, ``parameters``, ``metrics``,
                         ``varying`` (parameters that differ), ``source``
``GET /api/runs/{uid}``  one run: parameters, metadata, notes, tags, status history, errors (the traceback),
                         the tail of ``run.log``, checkpoints, latest metrics
``GET /api/series``      points: ``uid`` and ``metric`` (repeatable), ``points`` (max per series, default 2000;
                         0 for every point), ``step_min``, ``step_max``, ``method`` (``minmax`` or ``lttb``),
                         ``times=1`` for each point's wall-clock time (where the backend stores it),
                         ``encoding=typed`` for arrays as ``{'dtype': 'f8', 'bdata': base64}`` (little-endian
                         float64: exact, and far faster to encode and decode than JSON numbers).
                         Returns ``{'series': [{uid, metric, steps, values, times, total}]}``
``GET /api/figure``      a plotly figure of one ``metric`` for runs ``uid``: ``x`` (step, relative, wall),
                         ``smooth`` (0..0.99), ``log`` (0/1), ``legend`` (``lr={lr} seed={seed}``),
                         ``group_by`` (parameter, repeatable; ``*-seed`` for all but seeds), ``band`` (std,
                         stderr, minmax, none), ``points``, ``step_min``, ``step_max``
``GET /api/groups``      mean ± std of each ``metric``'s latest value per group of ``group_by`` over ``uid``
``GET /api/sweep``       ``kind=parcoords`` (``metric``) or ``kind=scatter`` (``param``, ``metric``) over the
                         runs matching ``filter`` (or ``uid``)
``GET /api/diff``        the parameters of runs ``uid`` and which of them differ
======================  ======================================================================================

Errors are ``{'error': kind, 'message': text}`` with status 400 (bad argument) or 404 (no such run).

Security: every response carries a strict Content-Security-Policy (scripts only from this origin, no inline
script); untrusted text (names, parameters, notes, logs) reaches the page only as JSON data, which the page
shows with ``textContent`` or as figure data. Requests naming another host are refused (DNS rebinding). With
a users file every request needs HTTP Basic credentials of a user of ``unitrack serve``'s users file (any role
may read).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from unitrack.errors import ConfigError, NotFoundError, UnitrackError
from unitrack.persistence.series import MAX_METRICS, series_to_json
from unitrack.ui import data, figures

if TYPE_CHECKING:
    from unitrack.persistence.users import UserStore
    from unitrack.ui.data import Source

__all__ = ["CSP", "create_app", "plotly_js_path"]

logger = logging.getLogger(__name__)

#: The Content-Security-Policy of every response. plotly.js sets style attributes and adds style elements,
#: hence 'unsafe-inline' for styles only; scripts come from this origin alone.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: The most points per series a request may ask for (0 asks for every point).
MAX_POINTS = 100_000
#: Successful logins are remembered this long, so scrypt runs once per user, not once per request.
AUTH_CACHE_S = 300.0


def plotly_js_path() -> Path:
    """The plotly.js bundle inside the installed ``plotly`` wheel (never copied into this repository).

    Raises:
        MissingDependencyError: when plotly is not installed.
    """
    try:
        import plotly
    except ImportError as exc:
        from unitrack.errors import MissingDependencyError

        raise MissingDependencyError("plotly", "ui") from exc
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def static_text(name: str) -> str:
    """A file of the page (``index.html``, ``app.js``, ``app.css``) as text."""
    return resources.files("unitrack.ui").joinpath("static").joinpath(name).read_text(encoding="utf-8")


#: How long a browser keeps a file served at a URL naming its content: a year, never asking again.
IMMUTABLE = "public, max-age=31536000, immutable"


#: V8's compile hint (Chromium 136+): compile every function of the file while it downloads, off the main
#: thread, rather than each one on the main thread when first called. plotly.js calls most of its functions
#: when it loads: its main-thread time on a first visit drops by about a third. Other browsers read a comment.
COMPILE_HINT = b"//# allFunctionsCalledOnLoad\n"


class Assets:
    """The page and its files. Each file is served at a URL naming its content (``/static/app.<hash>.js``,
    ``/static/plotly-<version>.<hash>.min.js``), cached by the browser for a year: a repeat visit fetches and
    compiles none of them again (Chromium also keeps plotly.js's compiled code). The page itself is always
    revalidated, so a new version of unitrack or plotly is a new URL in it. plotly.js is read once from the
    ``plotly`` wheel and served from memory, after :data:`COMPILE_HINT`.

    Raises:
        MissingDependencyError: when plotly is not installed.
    """

    def __init__(self) -> None:
        self.plotly = COMPILE_HINT + plotly_js_path().read_bytes()
        head = self.plotly[:300].decode("ascii", errors="replace")
        version = re.search(r"plotly\.js v([0-9][0-9A-Za-z.+-]*)", head)
        plotly_hash = hashlib.sha256(self.plotly).hexdigest()
        self.files: dict[str, tuple[bytes, str]] = {}
        self.urls: dict[str, str] = {}
        for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
            body = static_text(name).encode("utf-8")
            stem, ext = name.rsplit(".", 1)
            served = f"{stem}.{hashlib.sha256(body).hexdigest()[:12]}.{ext}"
            self.files[served] = (body, f"{kind}; charset=utf-8")
            self.urls[name] = f"/static/{served}"
        self.plotly_name = f"plotly-{version.group(1) if version else 'js'}.{plotly_hash[:12]}.min.js"
        self.plotly_etag = f'"{plotly_hash}"'
        self.urls["plotly.min.js"] = f"/static/{self.plotly_name}"
        page = static_text("index.html")
        for name, url in self.urls.items():
            page = page.replace(f"/static/{name}", url)
        self.index = page.encode("utf-8")


# ------------------------------------------------------------------------------------------------ arguments
def _floats(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} = {value!r} is not a number.") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name} = {value!r} is not a finite number.")
    return number


def _int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} = {value!r} is not a whole number.") from None
    if not low <= number <= high:
        raise ConfigError(f"{name} = {number} is out of range; give {low}..{high}.")
    return number


def _points(request: Request) -> int | None:
    points = _int(request.query_params.get("points"), "points", 2000, 0, MAX_POINTS)
    if points == 0:
        return None
    return max(points, 4)


def _list(request: Request, name: str, limit: int = 10_000) -> list[str]:
    values = request.query_params.getlist(name)
    if len(values) > limit:
        raise ConfigError(f"{len(values)} values of {name!r}; at most {limit} per request.")
    return values


def _json(payload: Any, status: int = 200) -> Response:
    """A JSON response. orjson writes the 200,000 numbers of a chart in milliseconds, where ``json`` takes a
    fifth of a second; ``json`` takes what orjson refuses (ints beyond 64 bits)."""
    import orjson

    try:
        body = orjson.dumps(payload)
    except (orjson.JSONEncodeError, TypeError):
        body = json.dumps(payload, allow_nan=False, separators=(",", ":")).encode("utf-8")
    return Response(body, status_code=status, media_type="application/json")


def _tagged(request: Request, payload: Any) -> Response:
    """A JSON response with an ETag naming its content; 304 (no body) when the request names that ETag already
    (the page's poll of a table in which nothing changed)."""
    response = _json(payload)
    tag = f'"{hashlib.blake2b(response.body, digest_size=16).hexdigest()}"'
    headers = {"ETag": tag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == tag:
        return Response(status_code=304, headers=headers)
    response.headers.update(headers)
    return response


# ------------------------------------------------------------------------------------------------ routes
class Routes:
    """The app's routes over one source (every route is a plain function run in Starlette's threadpool)."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.assets = Assets()

    def _listed(self, request: Request) -> tuple[list[dict[str, Any]], list[str]]:
        """The runs matching the request's ``filter``s and ``status``, as ``unitrack view`` lists them."""
        return self.source.rows(_list(request, "filter", 64), request.query_params.get("status") or None)

    def _chosen(self, request: Request) -> tuple[list[dict[str, Any]], list[str]]:
        """The runs a request names by ``uid`` (else those matching ``filter``/``status``, at most ``limit``)."""
        uids = _list(request, "uid")
        if uids:
            return self.source.chosen(uids)
        rows, columns = self._listed(request)
        limit = _int(request.query_params.get("limit"), "limit", 0, 0, 1_000_000)
        return (rows[:limit] if limit else rows), columns

    def index(self, request: Request) -> Response:
        return Response(
            self.assets.index, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"}
        )

    def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        assets = self.assets
        if name == assets.plotly_name:
            headers = {"Cache-Control": IMMUTABLE, "ETag": assets.plotly_etag}
            if request.headers.get("if-none-match") == assets.plotly_etag:
                return Response(status_code=304, headers=headers)
            return Response(assets.plotly, media_type="text/javascript", headers=headers)
        found = assets.files.get(name)
        if found is not None:
            return Response(found[0], media_type=found[1], headers={"Cache-Control": IMMUTABLE})
        if name in assets.urls:  # the plain name (an old page, a script): this version, revalidated each time
            return Response(
                status_code=307, headers={"Location": assets.urls[name], "Cache-Control": "no-cache"}
            )
        return _json({"error": "NotFoundError", "message": f"no file {name[:64]!r}"}, 404)

    def api(self, request: Request) -> Response:
        from unitrack.ui import app as module

        return _json({"source": self.source.label, "doc": module.__doc__})

    def runs(self, request: Request) -> Response:
        rows, columns = self._listed(request)
        payload = data.table(rows, columns)
        params = data.parameter_keys(columns)
        payload.update(
            parameters=params,
            metrics=data.metric_keys(columns),
            varying=data.varying(rows, params),
            source=self.source.label,
        )
        return _tagged(request, payload)

    def run(self, request: Request) -> Response:
        return _json(self.source.run(request.path_params["uid"]))

    def series(self, request: Request) -> Response:
        found = self.source.series(
            _list(request, "uid"),
            _list(request, "metric", MAX_METRICS),
            step_min=_floats(request.query_params.get("step_min"), "step_min"),
            step_max=_floats(request.query_params.get("step_max"), "step_max"),
            max_points=_points(request),
            method=request.query_params.get("method", "minmax"),
        )
        with_times = request.query_params.get("times", "0") in ("1", "true", "on")
        typed = request.query_params.get("encoding", "json") == "typed"
        out = []
        for s in found:
            item = series_to_json(s)
            if not with_times:
                item["times"] = None
            if typed:
                for key in ("steps", "values", "times"):
                    if item[key] is not None:
                        item[key] = figures.typed_array([float(v) for v in getattr(s, key)], minimum=0)
            out.append(item)
        return _json({"series": out})

    def figure(self, request: Request) -> Response:
        q = request.query_params
        rows, columns = self._chosen(request)
        metric = q.get("metric") or data.default_metric(columns)
        if not metric:  # no run has a metric yet: an empty chart
            return _json({"data": [], "layout": {"meta": {"metric": None, "uids": []}}})
        runs = {str(r["uid"]): r for r in rows}
        step_min = _floats(q.get("step_min"), "step_min")
        step_max = _floats(q.get("step_max"), "step_max")
        found = self.source.series(
            list(runs), [metric], step_min=step_min, step_max=step_max, max_points=_points(request)
        )
        smoothing = _floats(q.get("smooth"), "smooth") or 0.0
        if not 0 <= smoothing < 1:
            raise ConfigError(f"smooth = {smoothing}; give a weight in [0, 1).")
        x_range = [step_min, step_max] if step_min is not None and step_max is not None else None
        fig = figures.line_figure(
            found,
            runs,
            metric,
            x=q.get("x", "step"),
            smoothing=smoothing,
            log_y=q.get("log", "0") in ("1", "true", "on"),
            legend=q.get("legend") or None,
            group_by=_list(request, "group_by", 64) or None,
            band=q.get("band", "std"),
            x_range=x_range,
            binary=True,
        )
        fig["layout"]["meta"]["uids"] = list(runs)
        return _json(fig)

    def groups(self, request: Request) -> Response:
        rows, columns = self._chosen(request)
        metrics = _list(request, "metric", MAX_METRICS) or data.metric_keys(columns)
        return _json(figures.group_table(rows, _list(request, "group_by", 64) or None, metrics))

    def sweep(self, request: Request) -> Response:
        q = request.query_params
        rows, columns = self._chosen(request)
        metric = q.get("metric") or next(iter(data.metric_keys(columns)), "")
        params = data.parameter_keys(columns)
        if q.get("kind", "parcoords") == "scatter":
            param = q.get("param") or next(iter(data.varying(rows, params)), "")
            return _json(figures.scatter_figure(rows, param, metric))
        return _json(figures.parcoords_figure(rows, metric, data.varying(rows, params)))

    def diff(self, request: Request) -> Response:
        rows, columns = self._chosen(request)
        keys = [c for c in columns if c.startswith("parameters.") and any(c in r for r in rows)]
        out = []
        for key in keys:
            values = [data.cell(r.get(key)) for r in rows]
            differs = len({json.dumps(v, sort_keys=True) for v in values}) > 1
            out.append({"key": key[len("parameters.") :], "values": values, "differs": differs})
        return _json({"runs": [{"uid": r["uid"], "name": r["name"]} for r in rows], "parameters": out})


def _guard(fn: Callable[[Request], Response]) -> Callable[[Request], Response]:
    """Turn unitrack errors into JSON error replies (400, or 404 for a missing run)."""

    def endpoint(request: Request) -> Response:
        try:
            return fn(request)
        except NotFoundError as exc:
            return _json({"error": exc.kind, "message": str(exc)}, 404)
        except UnitrackError as exc:
            return _json({"error": exc.kind, "message": str(exc)}, 400)

    endpoint.__name__ = fn.__name__
    return endpoint


# ------------------------------------------------------------------------------------------------ middleware
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class Guard:
    """Security in front of the app: only GET/HEAD, only known hosts, optional Basic auth, strict headers.

    Args:
        app: The Starlette app.
        hosts: Host names the app answers to (others get 400: DNS rebinding).
        users: The users file whose users may read; None for no login (loopback, or ``--insecure``).
    """

    def __init__(self, app: ASGIApp, hosts: Sequence[str], users: UserStore | None = None) -> None:
        self.app = app
        self.hosts = {h.lower() for h in hosts}
        self.users = users
        self._verified: dict[str, float] = {}
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]").lower()
        if name not in self.hosts:
            await _reply(send, 400, b"unknown host; open the address unitrack ui printed", [])
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _reply(send, 405, b"the view is read-only", [(b"allow", b"GET, HEAD")])
            return
        if self.users is not None and not await self._authorized(headers.get("authorization", "")):
            await _reply(
                send,
                401,
                b"log in with a user of the users file",
                [(b"www-authenticate", b'Basic realm="unitrack"')],
            )
            return

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _authorized(self, header: str) -> bool:
        import asyncio

        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        key = hashlib.sha256(f"{user}\0{password}".encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            for known, until in list(self._verified.items()):
                if until < now:
                    del self._verified[known]
            if any(hmac.compare_digest(key, known) for known in self._verified):
                return True
        assert self.users is not None  # noqa: S101 - checked by the caller
        role = await asyncio.to_thread(self.users.verify, user[:64], password[:1024])
        if role is None:
            logger.info("ui: failed login for %r", user[:64])
            return False
        with self._lock:
            self._verified[key] = now + AUTH_CACHE_S
        return True


async def _reply(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), *headers, *_HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(
    source: Source,
    *,
    hosts: Sequence[str] = ("127.0.0.1", "localhost", "::1"),
    users: UserStore | None = None,
) -> ASGIApp:
    """The ASGI app of the web view over ``source``.

    Args:
        source: Where runs are read.
        hosts: Host names (and addresses) requests may name.
        users: Require a login of one of these users (any role reads); None for none.
    """
    routes = Routes(source)
    app = Starlette(
        routes=[
            Route("/", routes.index),
            Route("/static/{name}", routes.static),
            Route("/favicon.ico", lambda request: Response(status_code=204)),
            Route("/api", _guard(routes.api)),
            Route("/api/runs", _guard(routes.runs)),
            Route("/api/runs/{uid}", _guard(routes.run)),
            Route("/api/series", _guard(routes.series)),
            Route("/api/figure", _guard(routes.figure)),
            Route("/api/groups", _guard(routes.groups)),
            Route("/api/sweep", _guard(routes.sweep)),
            Route("/api/diff", _guard(routes.diff)),
        ]
    )
    return Guard(app, hosts, users)


def bind_hosts(host: str) -> list[str]:
    """The host names a server bound to ``host`` answers to."""
    names = ["127.0.0.1", "localhost", "::1"]
    if host not in ("", "0.0.0.0", "::"):  # noqa: S104 - compared, not bound
        names.append(host)
    else:
        import socket

        names += [socket.gethostname(), socket.getfqdn()]
    extra = os.environ.get("UNITRACK_UI_HOSTS")
    if extra:
        names += [h.strip() for h in extra.split(",") if h.strip()]
    return names
