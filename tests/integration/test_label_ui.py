"""The labeling web page: tasks from ``labeling.tasks`` shown, answers published as human labels."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest

from schemas import Label, LabelingTask
from services.core.settings import Settings
from services.labeling import ui
from services.labeling.ui import serve
from tests.integration.support import OpenReader, produce

TASK = LabelingTask(
    event_id="ev-7",
    entity_id="page-7",
    features={"https": 1.0, "long_url": 0.0},
    prediction=True,
    uncertainty=0.48,
    model_version=3,
)


@pytest.fixture
def page(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(ui, "READ_TIMEOUT_S", 0.5)  # so the test of a stalled client is quick
    server = serve(settings, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    server.board.stop()  # type: ignore[attr-defined]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def post(url: str, body: bytes) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_for_task(page: str, event_id: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, text = get(page + "/")
        if status == 200 and event_id in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"{event_id} never showed on the page")


def test_an_open_task_is_shown_and_an_answer_becomes_a_human_label(
    settings: Settings, page: str, reader: OpenReader
) -> None:
    produce(settings, "labeling_tasks", [(b"ev-7", TASK.model_dump_json().encode())])
    text = wait_for_task(page, "ev-7")
    assert "https=1.0" in text and "0.48" in text

    status, text = post(
        page + "/label", urllib.parse.urlencode({"event_id": "ev-7", "label": "false"}).encode()
    )
    assert status == 200 and "ev-7 labelled False" in text
    labels = reader("labels", Label).read_until(lambda items: len(items) >= 1)
    assert [(lbl.event_id, lbl.label, lbl.source) for lbl in labels] == [("ev-7", False, "human")]
    assert "ev-7</code>" not in get(page + "/")[1], "an answered task stays on the page"


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"event_id=ev-7&label=maybe", 400, "expected true or false"),
        (b"event_id=nope&label=true", 404, "no open task"),
        (b"event_id=ev-7&label=" + b"x" * 5000, 413, "over 4096"),
        (b"\xff\xfe garbage", 404, "no open task"),
    ],
    ids=["not a class", "unknown event", "oversized", "garbage"],
)
def test_bad_answers_get_a_clear_error_and_publish_nothing(
    settings: Settings, page: str, reader: OpenReader, body: bytes, status: int, says: str
) -> None:
    produce(settings, "labeling_tasks", [(b"ev-7", TASK.model_dump_json().encode())])
    wait_for_task(page, "ev-7")
    got, text = post(page + "/label", body)
    assert (got, says in text) == (status, True), text
    assert reader("labels", Label).settle(quiet_s=1.0) == []


def test_other_paths_are_not_found(page: str) -> None:
    assert get(page + "/admin")[0] == 404
    assert post(page + "/", b"x=1")[0] == 404


def raw_request(page: str, request: bytes) -> bytes:
    """Send ``request`` as is and read until the server closes the connection.

    This side stays open for writing, so a server waiting for more fails the read (timeout).
    """
    host, port = page.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
        return received


def test_a_negative_content_length_is_refused_without_reading_the_body(
    settings: Settings, page: str, reader: OpenReader
) -> None:
    produce(settings, "labeling_tasks", [(b"ev-7", TASK.model_dump_json().encode())])
    wait_for_task(page, "ev-7")
    body = b"event_id=ev-7&label=true"
    head = b"POST /label HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: -1\r\n\r\n"

    # the client keeps its side open: a server reading to the end would wait for good
    answer = raw_request(page, head + body)

    assert answer.startswith(b"HTTP/1.0 400") and b"Content-Length of -1" in answer
    assert reader("labels", Label).settle(quiet_s=1.0) == []


def test_a_client_that_sends_less_than_it_announced_is_dropped_and_the_page_still_answers(
    page: str,
) -> None:
    head = b"POST /label HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"

    received = raw_request(page, head + b"event_id=")

    assert received == b""  # closed after the read timed out, with nothing to say
    assert get(page + "/")[0] == 200
