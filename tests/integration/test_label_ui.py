"""The labeling web page: tasks from ``labeling.tasks`` shown, answers published as human labels."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest

from schemas import Label, LabelingTask
from services.core.settings import Settings
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
def page(settings: Settings) -> Iterator[str]:
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
