"""The open label requests behind the label page, and how a person's answer becomes a label.

The board follows ``labeling.tasks`` from the beginning, keeps the open tasks (most uncertain
first) and turns each answer into a ``Label`` (``source="human"``, with the labeller's name) on
``labels``, where the labeling service joins it like any other label. Answered tasks leave the
board; answers are acknowledged by the broker before the page says so. The page itself is
``services.labeling.web``.
"""

from __future__ import annotations

import logging
import threading
import uuid

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

    def open_tasks(self, limit: int) -> list[LabelingTask]:
        """The ``limit`` most uncertain open tasks, most uncertain first."""
        with self.lock:
            tasks = list(self.tasks.values())
        return sorted(tasks, key=lambda t: -t.uncertainty)[:limit]

    def waiting(self) -> int:
        """How many tasks are open."""
        with self.lock:
            return len(self.tasks)

    def answer(self, event_id: str, text: str, labeller: str) -> Label:
        """Publish ``labeller``'s label for a task (ValueError if it is not a valid answer)."""
        with self.lock:
            task = self.tasks.get(event_id)
        if task is None:
            raise LookupError(f"no open task for event {event_id[:80]!r}")
        label = Label(
            event_id=event_id,
            label=parse_answer(text, task.prediction, self.target),
            source="human",
            labeller=labeller,
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
