"""The label page on the real broker: sign-in, CSRF, rate limits, and answers that become labels."""

from __future__ import annotations

import http.cookiejar
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from schemas import Label, LabelingTask
from services.core import metrics
from services.core.settings import Settings
from services.labeling import web
from services.labeling.labellers import add_to_file
from services.labeling.web import LabelServer
from tests.integration.support import OpenReader, produce

TASK = LabelingTask(
    event_id="ev-7",
    entity_id="page-7",
    features={"https": 1.0, "long_url": 0.0},
    prediction=True,
    uncertainty=0.48,
    model_version=3,
)
PASSWORD = "a long labeller password"


def page_settings(settings: Settings, tmp_path: Path, **ui: object) -> Settings:
    users = tmp_path / "labellers"
    add_to_file(users, "ann", PASSWORD)
    labeling = settings.labeling.model_copy(update={"ui_users_file": users, **ui})
    return settings.model_copy(update={"labeling": labeling})


@pytest.fixture
def start_page(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., str]]:
    """Start label pages on free ports; each is stopped afterwards."""
    monkeypatch.setattr(web, "READ_TIMEOUT_S", 0.5)  # so the test of a stalled client is quick
    servers: list[LabelServer] = []

    def start(**ui: object) -> str:
        server = LabelServer(page_settings(settings, tmp_path, **ui), "127.0.0.1", 0)
        server.start()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def page(start_page: Callable[..., str]) -> str:
    return start_page()


class Browser:
    """A client with cookies, like a browser without the script: GETs, POSTs, follows 303s."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        self.base = base
        self.headers = headers or {}
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str) -> tuple[int, str]:
        return self._send(urllib.request.Request(self.base + path, headers=self.headers))

    def post(self, path: str, form: dict[str, str] | bytes, **headers: str) -> tuple[int, str]:
        body = form if isinstance(form, bytes) else urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(
            self.base + path, data=body, method="POST", headers={**self.headers, **headers}
        )
        return self._send(request)

    def token(self, path: str = "/") -> str:
        status, text = self.get(path)
        found = re.search(r"name='csrf' value='([^']+)'", text)
        assert found, f"no CSRF token on {path} ({status}): {text[:300]}"
        return found.group(1)

    def sign_in(self, name: str = "ann", password: str = PASSWORD) -> tuple[int, str]:
        return self.post(
            "/signin", {"name": name, "password": password, "csrf": self.token("/signin")}
        )

    def answer(self, event_id: str, label: str, **headers: str) -> tuple[int, str]:
        form = {"event_id": event_id, "label": label, "csrf": self.token()}
        return self.post("/label", form, **headers)

    def _send(self, request: urllib.request.Request) -> tuple[int, str]:
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()


def wait_for_task(browser: Browser, event_id: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, text = browser.get("/")
        if status == 200 and event_id in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"{event_id} never showed on the page")


@pytest.fixture
def ann(settings: Settings, page: str) -> Browser:
    """Ann, signed in, with TASK open on the page."""
    produce(settings, "labeling_tasks", [(b"ev-7", TASK.model_dump_json().encode())])
    browser = Browser(page)
    assert browser.sign_in()[0] == 200
    wait_for_task(browser, "ev-7")
    return browser


def test_a_signed_in_answer_becomes_a_human_label_with_its_labeller(
    ann: Browser, reader: OpenReader
) -> None:
    before = metrics.LABEL_ANSWERS.labels(labeller="ann")._value.get()
    text = wait_for_task(ann, "ev-7")
    assert "https" in text and "0.48" in text and "1 waiting" in text

    status, text = ann.answer("ev-7", "false")

    assert status == 200 and "ev-7 labelled false" in text and "you answered 1" in text
    labels = reader("labels", Label).read_until(lambda items: len(items) >= 1)
    assert [(lbl.event_id, lbl.label, lbl.source, lbl.labeller) for lbl in labels] == [
        ("ev-7", False, "human", "ann")
    ]
    assert "data-event='ev-7'" not in ann.get("/")[1], "an answered task stays on the page"
    assert metrics.LABEL_ANSWERS.labels(labeller="ann")._value.get() == before + 1


def test_nobody_signed_in_sees_the_sign_in_form_and_cannot_answer(
    settings: Settings, page: str, reader: OpenReader
) -> None:
    produce(settings, "labeling_tasks", [(b"ev-7", TASK.model_dump_json().encode())])
    stranger = Browser(page)
    status, text = stranger.get("/")
    assert status == 200 and "action='/signin'" in text and "ev-7" not in text

    token = stranger.token("/signin")
    status, text = stranger.post("/label", {"event_id": "ev-7", "label": "true", "csrf": token})

    assert status == 401 and "sign in first" in text
    assert reader("labels", Label).settle(quiet_s=1.0) == []


def test_a_wrong_password_is_refused_and_guessing_is_slowed_down(page: str) -> None:
    guesser = Browser(page)
    status, text = guesser.sign_in(password="guess")
    assert status == 401 and "Wrong name or password" in text
    assert guesser.sign_in(name="nobody", password="guess")[0] == 401

    statuses = [guesser.sign_in(password=f"guess {i}")[0] for i in range(web.SIGNINS_PER_MINUTE)]

    assert statuses[-1] == 429 and 401 in statuses
    assert guesser.sign_in()[0] == 429, "even the right password waits out the limit"


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}],
    ids=["other origin", "fetch metadata", "opaque origin"],
)
def test_a_cross_site_post_is_refused_even_with_the_session_and_token(
    ann: Browser, reader: OpenReader, headers: dict[str, str]
) -> None:
    status, text = ann.answer("ev-7", "true", **headers)

    assert status == 403 and "posted from another site" in text
    assert reader("labels", Label).settle(quiet_s=1.0) == []


def test_a_post_without_the_sessions_token_is_refused(ann: Browser, reader: OpenReader) -> None:
    for token in ("", "forged-token"):
        status, text = ann.post("/label", {"event_id": "ev-7", "label": "true", "csrf": token})
        assert status == 403 and "token is missing or stale" in text
    assert reader("labels", Label).settle(quiet_s=1.0) == []


@pytest.mark.parametrize(
    ("form", "status", "says"),
    [
        ({"event_id": "ev-7", "label": "maybe"}, 400, "expected true or false"),
        ({"event_id": "nope", "label": "true"}, 404, "no open task"),
        ({"event_id": "ev-7", "label": "x" * 5000}, 413, "over 4096"),
    ],
    ids=["not a class", "unknown event", "oversized"],
)
def test_bad_answers_get_a_clear_error_and_publish_nothing(
    ann: Browser, reader: OpenReader, form: dict[str, str], status: int, says: str
) -> None:
    got, text = ann.post("/label", {**form, "csrf": ann.token()})
    assert (got, says in text) == (status, True), text
    assert reader("labels", Label).settle(quiet_s=1.0) == []


def test_garbage_bytes_are_refused_without_a_crash(ann: Browser) -> None:
    status, text = ann.post("/label", b"\xff\xfe garbage&&&=\x00")
    assert status == 403 and "token" in text
    assert ann.get("/")[0] == 200


def test_answers_beyond_the_rate_limit_wait(
    settings: Settings, start_page: Callable[..., str], reader: OpenReader
) -> None:
    page = start_page(ui_answers_per_minute=2)
    tasks = [TASK.model_copy(update={"event_id": f"ev-{i}"}) for i in range(3)]
    produce(
        settings,
        "labeling_tasks",
        [(t.event_id.encode(), t.model_dump_json().encode()) for t in tasks],
    )
    ann = Browser(page)
    ann.sign_in()
    wait_for_task(ann, "ev-2")

    statuses = [ann.answer(f"ev-{i}", "true")[0] for i in range(3)]

    assert statuses == [200, 200, 429]
    labels = reader("labels", Label)
    labels.read_until(lambda items: len(items) >= 2)
    assert [lbl.event_id for lbl in labels.settle(quiet_s=1.0)] == ["ev-0", "ev-1"]


def test_behind_a_signing_in_proxy_its_header_names_the_labeller(
    settings: Settings, start_page: Callable[..., str], reader: OpenReader
) -> None:
    page = start_page(ui_trusted_user_header="X-Forwarded-User")
    produce(settings, "labeling_tasks", [(b"ev-7", TASK.model_dump_json().encode())])
    cy = Browser(page, headers={"X-Forwarded-User": "cy@example.org"})
    wait_for_task(cy, "ev-7")

    assert cy.answer("ev-7", "true")[0] == 200

    labels = reader("labels", Label).read_until(lambda items: len(items) >= 1)
    assert [lbl.labeller for lbl in labels] == ["cy@example.org"]
    bad_name = Browser(page, headers={"X-Forwarded-User": "<script>"})
    assert "action='/signin'" in bad_name.get("/")[1], "a name unsafe to show is no sign-in"


def test_the_page_refuses_to_start_with_nobody_allowed_in(
    settings: Settings, tmp_path: Path
) -> None:
    labeling = settings.labeling.model_copy(update={"ui_users_file": tmp_path / "none"})
    with pytest.raises(Exception, match="eddy labellers add NAME"):
        LabelServer(settings.model_copy(update={"labeling": labeling}), "127.0.0.1", 0)


def test_other_paths_are_not_found_and_pages_forbid_inline_script(page: str) -> None:
    browser = Browser(page)
    assert browser.get("/admin")[0] == 404
    assert browser.post("/", b"x=1")[0] == 405
    with urllib.request.urlopen(page + "/signin", timeout=10) as response:
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "samesite=strict" in response.headers["Set-Cookie"].lower()


def raw_request(page: str, request: bytes) -> bytes:
    """Send ``request`` as is and read until the server closes the connection or 10 s pass."""
    host, port = page.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
            head, _, body = received.partition(b"\r\n\r\n")
            length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
            if length and len(body) >= int(length.group(1)):
                break
        return received


def test_a_negative_content_length_is_refused(ann: Browser) -> None:
    head = b"POST /label HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: -1\r\n\r\n"
    answer = raw_request(ann.base, head + b"event_id=ev-7&label=true")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


def test_a_client_that_sends_less_than_it_announced_is_cut_off_and_the_page_still_answers(
    ann: Browser,
) -> None:
    cookie = "; ".join(f"{c.name}={c.value}" for c in ann.jar)
    head = (
        b"POST /label HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
        + f"Cookie: {cookie}\r\n\r\n".encode()
    )
    received = raw_request(ann.base, head + b"event_id=")
    assert received.startswith(b"HTTP/1.1 408") and b"did not arrive" in received
    assert ann.get("/")[0] == 200


FORM_FIELDS = st.dictionaries(
    st.sampled_from(["event_id", "label", "csrf", "name", "password", "x"]),
    st.text(max_size=300) | st.sampled_from(["ev-7", "true", "<script>", "\x00", "%ff"]),
    max_size=6,
)


@given(
    path=st.sampled_from(["/label", "/signin", "/signout"]),
    body=st.binary(max_size=600) | FORM_FIELDS.map(lambda f: urllib.parse.urlencode(f).encode()),
)
@hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_any_form_gets_an_answer_that_is_not_a_server_error(
    ann: Browser, path: str, body: bytes
) -> None:
    """Without the session's token no form does anything: each is refused, none breaks the page."""
    status, _text = ann.post(path, body)
    assert 400 <= status < 500
    assert ann.get("/")[0] == 200
