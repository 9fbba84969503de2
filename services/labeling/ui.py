"""The labeling web page: people answer the ``labeling.tasks`` the model was unsure about.

A small stdlib HTTP server. It follows ``labeling.tasks`` from the beginning, lists the open
tasks (most uncertain first) with their features and the model's guess, and turns each answer
into a ``Label`` (``source="human"``) on ``labels``, where the labeling service joins it like any
other label. Answered tasks leave the page; answers are acknowledged by the broker before the
page says so.
"""

from __future__ import annotations

import html
import logging
import threading
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from confluent_kafka import TopicPartition
from pydantic import ValidationError

from schemas import Label, LabelingTask
from schemas.base import Target
from services.core.feature_schema import FeatureSchema
from services.core.kafka import end_offsets, make_consumer, make_producer
from services.core.rejection import Rejection
from services.core.settings import Settings
from services.core.target import TargetSpec
from services.core.topics import Topics

log = logging.getLogger(__name__)

#: Largest form a browser may post: an answer is a few dozen bytes.
MAX_FORM_BYTES = 4096
#: Seconds a connection may stay silent mid-request: a client that announces more than it sends
#: would otherwise hold its thread for good.
READ_TIMEOUT_S = 10.0
#: Tasks shown at once.
PAGE_SIZE = 50


def parse_answer(text: str, guess: Target, target: TargetSpec | None = None) -> Target:
    """The answer typed like the model's guess (``true`` → True for a boolean model).

    With the deployment's ``target``, the answer must also fit it (one of its classes, say).
    """
    answer = _typed_like(text, guess)
    if target is None:
        return answer
    checked = target.check(answer)
    if isinstance(checked, Rejection):
        raise ValueError(checked.detail)
    return checked


def _typed_like(text: str, guess: Target) -> Target:
    value = text.strip()
    if isinstance(guess, bool):
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"expected true or false, got {value[:30]!r}")
    if isinstance(guess, int):
        return int(value)
    if isinstance(guess, float):
        return float(value)
    if not value or len(value) > 200:
        raise ValueError("expected a label of 1 to 200 characters")
    return value


class TaskBoard:
    """The open tasks, fed from ``labeling.tasks`` by a background consumer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.target = FeatureSchema.load(settings.ingest.feature_schema).target
        self.tasks: dict[str, LabelingTask] = {}
        self.answered: set[str] = set()
        self.lock = threading.Lock()
        self.producer = make_producer(settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="tasks", daemon=True)

    def start(self) -> None:
        """Start following the tasks topic."""
        self._thread.start()

    def stop(self) -> None:
        """Stop following and flush answers."""
        self._stop.set()
        self._thread.join(5)
        self.producer.flush(10)

    def _follow(self) -> None:
        consumer = make_consumer(self.settings, f"eddy-label-ui-{uuid.uuid4().hex}")
        topic = self.topics("labeling_tasks")
        consumer.assign(
            [TopicPartition(topic, tp.partition, 0) for tp in end_offsets(consumer, topic)]
        )
        try:
            while not self._stop.is_set():
                message = consumer.poll(0.5)
                if message is None or message.error() is not None:
                    continue
                try:
                    task = LabelingTask.model_validate_json(message.value() or b"")
                except ValidationError:
                    continue  # not a task: labeling validates what it publishes
                with self.lock:
                    if task.event_id not in self.answered:
                        self.tasks[task.event_id] = task
        finally:
            consumer.close()

    def open_tasks(self) -> list[LabelingTask]:
        """The open tasks, most uncertain first."""
        with self.lock:
            tasks = list(self.tasks.values())
        return sorted(tasks, key=lambda t: -t.uncertainty)[:PAGE_SIZE]

    def answer(self, event_id: str, text: str) -> Label:
        """Publish a person's label for a task (ValueError if it is not a valid answer)."""
        with self.lock:
            task = self.tasks.get(event_id)
        if task is None:
            raise LookupError(f"no open task for event {event_id[:80]!r}")
        label = Label(
            event_id=event_id,
            label=parse_answer(text, task.prediction, self.target),
            source="human",
        )
        self.producer.produce(
            self.topics("labels"), label.model_dump_json().encode(), event_id.encode()
        )
        if self.producer.flush(10):
            raise TimeoutError("the broker did not acknowledge the label; try again")
        with self.lock:
            self.tasks.pop(event_id, None)
            self.answered.add(event_id)
        return label


def render(tasks: list[LabelingTask], notice: str = "", target: TargetSpec | None = None) -> str:
    """The page: one form per open task, a button per class where the classes are known."""
    rows = []
    for task in tasks:
        features = ", ".join(
            f"{html.escape(k)}={html.escape(str(v))}" for k, v in sorted(task.features.items())
        )
        choices = ["true", "false"] if isinstance(task.prediction, bool) else []
        if target is not None and target.classes is not None:
            choices = [html.escape(str(c)) for c in target.classes]
        buttons = (
            "".join(f'<button name="label" value="{c}">{c}</button> ' for c in choices)
            or '<input name="label" required maxlength="200"> <button>send</button>'
        )
        rows.append(
            f"<tr><td><code>{html.escape(task.event_id)}</code></td><td>{features}</td>"
            f"<td>{html.escape(str(task.prediction))} (v{task.model_version})</td>"
            f"<td>{task.uncertainty:.2f}</td><td><form method='post' action='/label'>"
            f"<input type='hidden' name='event_id' value='{html.escape(task.event_id)}'>"
            f"{buttons}</form></td></tr>"
        )
    body = (
        "".join(rows) or "<tr><td colspan='5'>No open tasks: the model is sure of itself.</td></tr>"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Eddy: label requests</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.3em .8em;"
        "border-bottom:1px solid #ddd;text-align:left}</style></head><body>"
        f"<h1>Label requests</h1><p>{html.escape(notice)}</p>"
        "<table><tr><th>event</th><th>features</th><th>model's guess</th><th>uncertainty</th>"
        f"<th>your label</th></tr>{body}</table></body></html>"
    )


def make_handler(board: TaskBoard) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to ``board``."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "eddy-label-ui"
        timeout = READ_TIMEOUT_S

        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/":
                self._send(HTTPStatus.NOT_FOUND, "not found: the page is /")
                return
            self._send(HTTPStatus.OK, render(board.open_tasks(), target=board.target), "text/html")

        def do_POST(self) -> None:
            if self.path != "/label":
                self._send(HTTPStatus.NOT_FOUND, "not found: answers go to /label")
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._send(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
                return
            if length < 0:  # read(-1) would read until the client stops sending
                self._send(HTTPStatus.BAD_REQUEST, f"a Content-Length of {length} bytes")
                return
            if length > MAX_FORM_BYTES:
                self._send(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"form of {length} bytes, over {MAX_FORM_BYTES}",
                )
                return
            form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
            event_id, text = form.get("event_id", [""])[0], form.get("label", [""])[0]
            try:
                label = board.answer(event_id, text)
            except LookupError as error:
                self._send(HTTPStatus.NOT_FOUND, str(error))
            except (ValueError, ValidationError) as error:
                self._send(HTTPStatus.BAD_REQUEST, f"not a valid label: {error}")
            except TimeoutError as error:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, str(error))
            else:
                notice = f"Thanks: {label.event_id} labelled {label.label}."
                self._send(
                    HTTPStatus.OK, render(board.open_tasks(), notice, board.target), "text/html"
                )

        def _send(self, status: HTTPStatus, text: str, kind: str = "text/plain") -> None:
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("http", extra={"request": format % args})

    return Handler


def serve(settings: Settings, host: str, port: int) -> ThreadingHTTPServer:
    """Start the board and return the (not yet serving) HTTP server."""
    board = TaskBoard(settings)
    board.start()
    server = ThreadingHTTPServer((host, port), make_handler(board))
    server.board = board  # type: ignore[attr-defined]
    return server
