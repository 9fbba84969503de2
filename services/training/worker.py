"""A candidate in a process of its own: a heavy model learns beside training, not inside it.

A spec with ``process = "own"`` runs here (``python -m services.training`` with
``EDDY_TRAINING__WORKER`` naming it; training starts and watches these processes). It reads
``training.examples`` in a consumer group of its own, learns test-then-train at its own pace,
and saves itself (model and scores, signed) in Redis with the input positions it has seen,
once its batch is done, as often as pickling it allows (``CHECKPOINT_SHARE``) and at least
every ``worker_checkpoint_s``: a restart continues from there, so a kill
loses no example and learns none twice. Beside the checkpoint it writes a small row (scores,
examples learned, rate) that training reads for the leaderboard and the selection rule; when
selection makes it the champion, training publishes the model of its newest checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import redis
from confluent_kafka import Message

from schemas import TrainingExample
from schemas.models import ModelSpec
from services.core.checkpoint import Checkpointing, CheckpointStore
from services.core.feature_schema import FeatureSchema
from services.core.model_specs import build_model, load_specs
from services.core.rejection import Rejection
from services.core.runtime import Runtime, run_stream_service
from services.core.settings import Settings
from services.core.stream import Effects
from services.core.target import TargetSpec
from services.training.learner import Candidate, Example
from services.training.scores import TASK_METRICS

SERVICE = "training"
#: Least time between two rows of a candidate's process (a small hash write each), and
#: between two checkpoints.
ROW_INTERVAL_S = 0.25
#: Share of its time a candidate's process may spend pickling checkpoints: a young model (an
#: ARF of 5 trees pickles in 14 ms after 500 examples) saves every 0.28 s, so a selection
#: switch to it serves what it learned a moment ago; a grown one (64 ms after 5,000) every
#: 1.3 s; none less often than ``worker_checkpoint_s``.
CHECKPOINT_SHARE = 0.05
log = logging.getLogger(__name__)


def checkpoint_key(prefix: str, model_name: str, candidate: str) -> str:
    """Where a candidate's process keeps its checkpoint."""
    return f"eddy:{prefix}{SERVICE}:{model_name}:candidate:{candidate}"


def rows_key(prefix: str, model_name: str) -> str:
    """The hash of the candidates' own processes' rows (field: candidate name)."""
    return f"eddy:{prefix}{SERVICE}:{model_name}:candidates"


def spec_fingerprint(spec: ModelSpec, target: TargetSpec, window: int) -> str:
    """What a checkpoint embodies: another spec, target or window starts afresh."""
    return json.dumps([spec.model_dump(), target.model_dump(), window], sort_keys=True)


def checkpoint_store(
    client: redis.Redis, settings: Settings, spec: ModelSpec, target: TargetSpec
) -> CheckpointStore:
    """The signed checkpoint of one candidate's process (the worker writes, training reads)."""
    return CheckpointStore(
        client,
        checkpoint_key(settings.topic_prefix, settings.model_name, spec.name),
        settings.signing_key_bytes(),
        spec_fingerprint(spec, target, settings.training.score_window),
    )


class Worker:
    """One candidate learning every example, checkpointed with its positions."""

    def __init__(self, runtime: Runtime, name: str) -> None:
        settings = runtime.settings
        self.schema = FeatureSchema.load(settings.ingest.feature_schema).served()
        specs = {s.name: s for s in load_specs(settings.training.models, self.schema)}
        if name not in specs:
            raise ValueError(f"no candidate {name!r} in {settings.training.models}")
        spec = specs[name]
        self.examples_topic = runtime.topics("training_examples")
        self.redis = runtime.redis
        self.rows_key = rows_key(settings.topic_prefix, settings.model_name)
        store = checkpoint_store(runtime.redis, settings, spec, self.schema.target)
        saved = store.load()
        if saved is not None and isinstance(saved.state, Candidate):
            self.candidate = saved.state
            log.info("restored", extra={"candidate": name, "examples": self.candidate.learned})
        else:
            model = build_model(spec, self.schema)
            window = settings.training.score_window
            self.candidate = Candidate(spec, model, self.schema.target.type, window, 1)
        positions = saved.positions if saved is not None else None
        self.saver = Checkpointing(
            store,
            self.state,
            settings.training.worker_checkpoint_s,
            positions,
            share=CHECKPOINT_SHARE,
            floor_s=ROW_INTERVAL_S,
        )
        self._last_row = 0.0

    def state(self) -> Candidate:
        """What a checkpoint keeps: the candidate, its model and scores."""
        return self.candidate

    def on_examples(self, messages: Sequence[Message]) -> Effects:
        """Test-then-train on each example whose label fits (training dead-letters the rest)."""
        check = self.schema.target.check
        validate = TrainingExample.__pydantic_validator__.validate_json
        examples = []
        for message in messages:
            try:
                example = validate(message.value() or b"")
            except ValueError:
                continue  # training, reading the same topic, dead-letters it
            label = check(example.label)
            if not isinstance(label, Rejection):
                examples.append(Example(example.features, label, 0, 0))
        self.candidate.learn_many(examples)
        self.publish_row()
        return Effects()

    def tick(self) -> Effects:
        """Between batches: the row, and a checkpoint if one is due."""
        self.publish_row(force=True)
        return self.saver.tick()

    def publish_row(self, force: bool = False) -> None:
        """The candidate's standing for the leaderboard and selection, at most every 0.25 s.

        Training reads it before each selection check: a stale row delays a switch to a
        candidate that pulled ahead (by 1 s here, 400 examples at the demo's rate).
        """
        now = time.monotonic()
        if not force and now - self._last_row < ROW_INTERVAL_S:
            return
        self._last_row = now
        self.redis.hset(self.rows_key, self.candidate.name, json.dumps(row_of(self.candidate)))


def row_of(candidate: Candidate) -> dict[str, Any]:
    """What training needs of a candidate in its own process: scores and progress."""
    return {
        "scores": {m: candidate.scores.value(m) for m in TASK_METRICS[candidate.task]},
        "errors_of": {m: candidate.scores.error(m) for m in TASK_METRICS[candidate.task]},
        "since_start": candidate.scores.since_start(),
        "examples": candidate.learned,
        "errors": candidate.errors,
        "examples_per_s": round(candidate.examples_per_second(), 1),
        "pid": os.getpid(),
        "updated_at": time.time(),
    }


def run_worker(runtime: Runtime, name: str) -> None:
    """Learn as the candidate ``name`` until SIGTERM (the service bootstrapped as its own)."""
    worker = Worker(runtime, name)
    run_stream_service(
        runtime,
        {worker.examples_topic: worker.on_examples},
        tick=worker.tick,
        on_assign=worker.saver.on_assign,
        after_batch=worker.saver.after_batch,
    )
