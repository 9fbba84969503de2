"""The label page as a Starlette app: sign-in, CSRF-checked forms, rate-limited answers.

People sign in with a name and password from the labellers file (``eddy labellers add``), or,
behind a reverse proxy that signs them in, by a header the proxy sets (trusted only when
configured). Sessions are signed cookies (SameSite=Strict). Every form carries the session's
CSRF token, and a post whose ``Origin`` or ``Sec-Fetch-Site`` says it came from another site is
refused before its token is even read. Each answer becomes a ``Label`` with ``source="human"``
and the labeller's name.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from services.core import metrics
from services.core.exceptions import ConfigurationError
from services.core.settings import Settings
from services.labeling import pages
from services.labeling.board import TaskBoard
from services.labeling.labellers import NAME, Labellers, RateLimit

log = logging.getLogger(__name__)

#: Largest form a browser may post: an answer is a few dozen bytes.
MAX_FORM_BYTES = 4096
#: Seconds a client may take to send its form: one that announces more than it sends is cut off.
READ_TIMEOUT_S = 10.0
#: Requests shown at once.
PAGE_SIZE = 20
#: Sign-in attempts per name and per client address a minute.
SIGNINS_PER_MINUTE = 10
#: Distinct labeller names on the metrics before the rest count as "other" (proxy sign-in).
MAX_NAMED_LABELLERS = 500

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class _RefusedError(Exception):
    """A request answered with ``status`` and a message saying why (and what to do)."""

    def __init__(self, status: int, text: str, retry_after: float = 0.0) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.retry_after = retry_after


class LabelPage:
    """The app's state: the board, who may sign in, the limits and the per-labeller counts."""

    def __init__(self, settings: Settings, labellers: Labellers, board: TaskBoard) -> None:
        ui = settings.labeling
        self.board = board
        self.labellers = labellers
        self.proxy_header = ui.ui_trusted_user_header.lower()
        self.answers = RateLimit(ui.ui_answers_per_minute)
        self.signins = RateLimit(SIGNINS_PER_MINUTE)
        self.answered: Counter[str] = Counter()
        self._named: set[str] = set(self.labellers.hashes)
        self._lock = threading.Lock()

    def metric_name(self, labeller: str) -> str:
        """The labeller's name on the metrics, bounded in number."""
        with self._lock:
            if labeller in self._named or len(self._named) < MAX_NAMED_LABELLERS:
                self._named.add(labeller)
                return labeller
        return "other"

    def app(self, session_key: str, secure_cookies: bool) -> Starlette:
        """The ASGI app."""
        routes = [
            Route("/", self._board_page, methods=["GET"]),
            Route("/signin", self._signin_page, methods=["GET"]),
            Route("/signin", self._signin, methods=["POST"]),
            Route("/signout", self._signout, methods=["POST"]),
            Route("/label", self._label, methods=["POST"]),
            Route("/static/label.css", _static(pages.STYLE, "text/css"), methods=["GET"]),
            Route("/static/label.js", _static(pages.SCRIPT, "text/javascript"), methods=["GET"]),
        ]
        middleware = [
            Middleware(
                SessionMiddleware,
                secret_key=session_key,
                session_cookie="eddy_label_session",
                max_age=12 * 3600,
                same_site="strict",
                https_only=secure_cookies,
            )
        ]
        return Starlette(routes=routes, middleware=middleware)

    # -- pages

    async def _board_page(self, request: Request) -> Response:
        labeller = self._labeller(request)
        if labeller is None:
            return RedirectResponse("/signin", status_code=303)
        view = pages.View(
            labeller=labeller,
            csrf=_csrf_token(request),
            waiting=self.board.waiting(),
            answered=self.answered[labeller],
            notice=request.session.pop("notice", ""),
        )
        tasks = self.board.open_tasks(PAGE_SIZE)
        return _html(pages.board(tasks, view, self.board.target))

    async def _signin_page(self, request: Request) -> Response:
        if self._labeller(request) is not None:
            return RedirectResponse("/", status_code=303)
        return _html(pages.signin(_csrf_token(request), proxy_header=self.proxy_header))

    async def _signin(self, request: Request) -> Response:
        try:
            form = await _checked_form(request)
        except _RefusedError as refused:
            return _refusal(refused)
        name = form.get("name", "")[:64]
        client = request.client.host if request.client else "?"
        wait = max(self.signins.allow(f"name:{name}"), self.signins.allow(f"addr:{client}"))
        if wait:
            metrics.LABEL_SIGNINS.labels(outcome="limited").inc()
            return _refusal(
                _RefusedError(429, f"too many sign-in attempts: try again in {wait:.0f} s", wait)
            )
        ok = await asyncio.to_thread(self.labellers.check, name, form.get("password", ""))
        if not ok:
            metrics.LABEL_SIGNINS.labels(outcome="refused").inc()
            log.info("sign-in refused", extra={"client": client})
            page = pages.signin(_csrf_token(request), "Wrong name or password.", self.proxy_header)
            return _html(page, 401)
        metrics.LABEL_SIGNINS.labels(outcome="ok").inc()
        request.session.clear()  # a fresh session and token: no fixation
        request.session["labeller"] = name
        log.info("signed in", extra={"labeller": name})
        return RedirectResponse("/", status_code=303)

    async def _signout(self, request: Request) -> Response:
        try:
            await _checked_form(request)
        except _RefusedError as refused:
            return _refusal(refused)
        request.session.clear()
        return RedirectResponse("/signin", status_code=303)

    async def _label(self, request: Request) -> Response:
        labeller = self._labeller(request)
        try:
            if labeller is None:
                raise _RefusedError(401, "sign in first: your answers carry your name")
            form = await _checked_form(request)
            wait = self.answers.allow(labeller)
            if wait:
                raise _RefusedError(
                    429, f"too many answers at once: try again in {wait:.0f} s", wait
                )
            label = await asyncio.to_thread(
                self.board.answer, form.get("event_id", ""), form.get("label", ""), labeller
            )
        except _RefusedError as refused:
            return _refusal(refused)
        except LookupError as error:
            return _refusal(_RefusedError(404, f"{error}: someone may have answered it already"))
        except (ValueError, ValidationError) as error:
            return _refusal(_RefusedError(400, f"not a valid label: {error}"))
        except TimeoutError as error:
            return _refusal(_RefusedError(503, str(error)))
        self.answered[labeller] += 1
        metrics.LABEL_ANSWERS.labels(labeller=self.metric_name(labeller)).inc()
        request.session["notice"] = f"Thanks: {label.event_id} labelled {pages.shown(label.label)}."
        return RedirectResponse("/", status_code=303)

    def _labeller(self, request: Request) -> str | None:
        """Who is signed in: the proxy's header where trusted, else the session's name."""
        if self.proxy_header:
            proxied = request.headers.get(self.proxy_header, "")
            if proxied and NAME.fullmatch(proxied):
                if request.session.get("labeller") != proxied:
                    request.session.clear()
                    request.session["labeller"] = proxied
                return proxied
        name = request.session.get("labeller")
        return name if isinstance(name, str) and name in self.labellers.hashes else None


def _csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


async def _checked_form(request: Request) -> dict[str, str]:
    """The posted form, after the same-site and CSRF checks; refused with a reason otherwise."""
    if _cross_site(request):
        raise _RefusedError(403, "refused: this form was posted from another site")
    form = await _read_form(request)
    expected = request.session.get("csrf")
    if not isinstance(expected, str) or not hmac.compare_digest(
        form.get("csrf", "").encode(), expected.encode()
    ):
        raise _RefusedError(403, "refused: the form's token is missing or stale; reload the page")
    return form


def _cross_site(request: Request) -> bool:
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False  # old clients and scripts: the token and SameSite cookie still hold
    return origin == "null" or urlsplit(origin).netloc != request.headers.get("host")


async def _read_form(request: Request) -> dict[str, str]:
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit():
        raise _RefusedError(400, f"a Content-Length of {declared[:20]!r}")
    if int(declared) > MAX_FORM_BYTES:
        raise _RefusedError(413, f"form of {declared} bytes, over {MAX_FORM_BYTES}")
    body = bytearray()

    async def read() -> None:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > MAX_FORM_BYTES:
                raise _RefusedError(413, f"form of more than {MAX_FORM_BYTES} bytes")

    try:
        await asyncio.wait_for(read(), READ_TIMEOUT_S)
    except TimeoutError:
        raise _RefusedError(408, f"the form did not arrive within {READ_TIMEOUT_S:.0f} s") from None
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
    return {name: values[0] for name, values in fields.items()}


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=HEADERS)


def _refusal(refused: _RefusedError) -> Response:
    headers = dict(HEADERS)
    if refused.retry_after:
        headers["Retry-After"] = str(max(1, round(refused.retry_after)))
    return HTMLResponse(
        pages.message(_TITLES.get(refused.status, "Refused"), refused.text),
        status_code=refused.status,
        headers=headers,
    )


_TITLES = {
    400: "Not a valid answer",
    401: "Sign in first",
    403: "Refused",
    404: "Already answered",
    408: "Too slow",
    413: "Too large",
    429: "Slow down",
    503: "Try again",
}


def _static(text: str, kind: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse(text, media_type=kind, headers={"Cache-Control": "max-age=3600"})

    return endpoint


def allowed_labellers(settings: Settings) -> Labellers:
    """Who may sign in; an error saying how to add someone when nobody could."""
    ui = settings.labeling
    users_file = ui.ui_users_file if ui.ui_users_file.exists() else None
    labellers = Labellers.load(users_file, ui.ui_users)
    if not labellers and not ui.ui_trusted_user_header:
        raise ConfigurationError(
            f"no labellers: add one with `eddy labellers add NAME` (writes {ui.ui_users_file}), "
            "or set EDDY_LABELING__UI_TRUSTED_USER_HEADER behind a proxy that signs people in"
        )
    return labellers


class LabelServer:
    """The board and the page, served by uvicorn on ``host``:``port`` (0: a free port)."""

    def __init__(self, settings: Settings, host: str, port: int) -> None:
        ui = settings.labeling
        labellers = allowed_labellers(settings)
        self.board = TaskBoard(settings)
        page = LabelPage(settings, labellers, self.board)
        session_key = ui.ui_session_key.get_secret_value() or secrets.token_urlsafe(32)
        config = uvicorn.Config(
            page.app(session_key, ui.ui_secure_cookies),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            proxy_headers=False,
            timeout_keep_alive=5,
            limit_concurrency=256,
            h11_max_incomplete_event_size=16 * 1024,
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on, once started."""
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def start(self) -> None:
        """Serve in a background thread; returns once it listens."""
        self.board.start()
        self._thread = threading.Thread(target=self.server.run, name="label-page", daemon=True)
        self._thread.start()
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the label page did not start (port in use?)")
            self._thread.join(0.05)

    def stop(self) -> None:
        """Stop serving and following the tasks."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.board.stop()
