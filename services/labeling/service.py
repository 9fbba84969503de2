"""labeling: joins late labels with the served predictions into ``training.examples``.

Two topics, one consumer group: each champion prediction, which carries the features it was made
on, waits in Redis (pending.py) until its label comes or ``pending_ttl_s`` runs out; a label that
comes before its prediction waits too. (Predictions carry their features so that labeling reads one
message per event, not two as when it read ``features`` too.) Every label, joined or not, is
counted (counts.py), and an unsure prediction becomes a ``LabelingTask`` for a person. Delivery is
at-least-once: what a batch decided is marked in Redis only after its outputs are acknowledged, so
a replayed batch may repeat an example (a consumer de-duplicates by ``event_id``) but never loses
one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from confluent_kafka import Message

from schemas import Label, LabelingTask, Prediction
from services.core import metrics
from services.core.feature_schema import FeatureSchema
from services.core.kafka import batching_fetches
from services.core.rejection import Rejection
from services.core.runtime import Runtime, bootstrap, run_stream_service
from services.core.settings import Settings
from services.core.stream import BatchHandler, DeferredEffects, Effects, decode_batch
from services.core.target import same_value
from services.labeling.counts import LabelingCounts, LabelOutcome
from services.labeling.examples import training_example_json
from services.labeling.pending import PendingEvent, PendingStore
from services.labeling.uncertainty import uncertainty_worth_asking

SERVICE = "labeling"
#: Expired events closed per sweep: bounds how long one sweep holds up consumption; the rest
#: wait for the next sweep.
SWEEP_LIMIT = 10_000

EventT = TypeVar("EventT", Prediction, Label)


class _Settled:
    """Ids whose join or task was marked in Redis while one batch's exchange was on its way.

    That exchange may have run before the marks, so its replies still show these events open.
    """

    def __init__(self) -> None:
        self.joined: set[str] = set()
        self.tasked: set[str] = set()


class _Marks:
    """What an acknowledged batch decided: sent to Redis after the ack, awaited before commit."""

    def __init__(self, labeling: Labeling, joined: list[str], tasked: list[str]) -> None:
        self.labeling, self.joined, self.tasked = labeling, joined, tasked
        self._wait: Callable[[], None] | None = None

    def send(self) -> None:
        self._wait = self.labeling._settle(self.joined, self.tasked)

    def wait(self) -> None:
        assert self._wait is not None, "waited for marks never sent"
        self._wait()


class _Handling:
    """A batch whose exchange is on its way to Redis; ``result`` finishes it (DeferredEffects)."""

    def __init__(self, finish: Callable[[], Effects]) -> None:
        self._finish = finish

    def result(self) -> Effects:
        return self._finish()


class Labeling:
    """The handlers of the two topics and the expiry sweep, over one store.

    An example or task is marked in Redis only after the broker acknowledged it (marked earlier,
    a crash would lose it). Until then its id is "in flight" (``joining``, ``tasking``), and
    what later batches' exchanges reply about it is not acted on, so two inputs cannot produce
    it twice. Nor is what an exchange replies about an id marked while it was on its way.
    """

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        namespace = f"{settings.topic_prefix}{SERVICE}"
        self.store = PendingStore(
            runtime.redis,
            namespace,
            settings.labeling.pending_ttl_s,
            shards=settings.labeling.redis_shards,
        )
        self.task_uncertainty = settings.labeling.task_uncertainty
        self.target = FeatureSchema.load(settings.ingest.feature_schema).target
        self.predictions_topic = runtime.topics("predictions")
        self.labels_topic = runtime.topics("labels")
        self.examples_topic = runtime.topics("training_examples")
        self.tasks_topic = runtime.topics("labeling_tasks")
        self.dlq_topic = runtime.topics("dlq")
        self.counts = LabelingCounts(SERVICE)
        self.duplicates = metrics.DUPLICATES.labels(SERVICE)
        self.joining: set[str] = set()
        self.tasking: set[str] = set()
        self._on_their_way: list[_Settled] = []

    def handlers(self) -> dict[str, BatchHandler]:
        """Topic → handler (the loop gets ``submit``, which does both topics at once)."""
        return {self.predictions_topic: self.on_predictions, self.labels_topic: self.on_labels}

    def on_predictions(self, messages: Sequence[Message]) -> Effects:
        """Store served predictions; join any label parked for them, else ask if unsure.

        The champion's and a canary's predictions are served alike (a shadow's never come here).
        """
        return self.on_batch({self.predictions_topic: messages})

    def on_labels(self, messages: Sequence[Message]) -> Effects:
        """Join each label with its prediction if it is here, else park it until it comes."""
        return self.on_batch({self.labels_topic: messages})

    def on_batch(self, batches: Mapping[str, Sequence[Message]]) -> Effects:
        """Handle a batch's predictions and labels in one round trip to Redis.

        What each topic's handler would do one after the other (predictions, then labels), but
        the handler waits for Redis once per batch instead of once per topic: in the loop, on a
        busy machine, each wait cost milliseconds. No one is asked about an event that a label
        of the same batch joins.
        """
        return self.submit(batches).result()

    def submit(self, batches: Mapping[str, Sequence[Message]]) -> DeferredEffects:
        """``on_batch`` with the exchange sent now and its result taken later.

        The loop's joint handler: labeling decodes the next batch while Redis works on this one.
        """
        effects = Effects()
        outcomes: Counter[LabelOutcome] = Counter()
        predictions = self._decode_unique(
            batches.get(self.predictions_topic, ()),
            Prediction,
            effects,
        )
        labels = self._decode_unique(
            batches.get(self.labels_topic, ()),
            Label,
            effects,
            repeats=outcomes,
            check=self._fits_target,
        )
        sent = self.store.send_exchange(
            {i: raw for i, (_item, raw) in predictions.items()},
            {i: raw for i, (_item, raw) in labels.items()},
        )
        settled = _Settled()
        self._on_their_way.append(settled)

        def finish() -> Effects:
            try:
                predicted, parked = sent.result()
            finally:
                self._on_their_way.remove(settled)
            # events joined in flight, or marked since the exchange left: nothing more to do
            busy = self.joining | settled.joined
            outcomes["duplicate"] += sum(1 for i in labels if i in busy)
            for states in (predicted, parked):
                for event_id in busy.intersection(states):
                    del states[event_id]
            joined: set[str] = set()
            tasked: list[str] = []
            # labels first: an event a label joins in this batch needs no one asked about it
            self._labels_parked(effects, labels, parked, outcomes, joined)
            asked = self.tasking | settled.tasked
            fresh = self._fresh(predictions, predicted)
            self._predictions_stored(effects, fresh, joined, tasked, asked)
            outcomes["joined"] += len(joined)
            self.counts.labels(outcomes)
            self._after_ack(effects, list(joined), tasked)
            return effects

        return _Handling(finish)

    def _predictions_stored(
        self,
        effects: Effects,
        fresh: dict[str, tuple[Prediction, PendingEvent]],
        joined: set[str],
        tasked: list[str],
        asked: set[str],
    ) -> None:
        """Join the labels parked for these predictions, else ask for labels where unsure."""
        for event_id, (prediction, state) in fresh.items():
            if state.early_label is not None:
                self._join(effects, event_id, state, state.early_label, joined)
            elif event_id not in joined and self._ask(effects, prediction, state, asked):
                tasked.append(event_id)

    def _labels_parked(
        self,
        effects: Effects,
        labels: dict[str, tuple[Label, bytes]],
        parked: dict[str, PendingEvent],
        outcomes: Counter[LabelOutcome],
        joined: set[str],
    ) -> None:
        """Join the labels whose prediction is here; count what became of the others."""
        for event_id, state in parked.items():
            if state.labeled or state.early_label is not None:
                # a parked label stays until its join is acknowledged: it also stands for a label
                # being joined in this very batch, or one another instance parked first
                outcomes["duplicate"] += 1
            elif state.expired:
                outcomes["expired"] += 1
            elif state.prediction is not None:
                self._join(effects, event_id, state, labels[event_id][1], joined)
            else:
                outcomes["early"] += 1  # parked until its prediction comes

    def _join(
        self,
        effects: Effects,
        event_id: str,
        state: PendingEvent,
        label: bytes,
        joined: set[str],
    ) -> None:
        """Emit the training example of an event whose prediction is stored."""
        assert state.prediction is not None
        key, example = training_example_json(state.prediction, label)
        effects.emit_json(self.examples_topic, key, example)
        joined.add(event_id)

    def sweep(self) -> Effects:
        """Close events whose pending time ran out, count what they lacked, and log the counts."""
        expired = self.store.pop_expired(SWEEP_LIMIT)
        unknown = sum(1 for state in expired.values() if state.early_label is not None)
        unlabeled = sum(
            1
            for state in expired.values()
            if state.early_label is None and state.prediction is not None
        )
        self.counts.expired_events(len(expired))
        self.counts.labels(Counter({"unknown": unknown}))
        self.counts.unlabeled_expired(unlabeled)
        self.counts.log_sweep()
        return Effects()

    def _decode_unique(
        self,
        messages: Sequence[Message],
        model: type[EventT],
        effects: Effects,
        keep: Callable[[EventT], bool] | None = None,
        repeats: Counter[LabelOutcome] | None = None,
        check: Callable[[EventT], EventT | Rejection] | None = None,
    ) -> dict[str, tuple[EventT, bytes]]:
        """Valid inputs by event id with their raw JSON, the first of each id in the batch.

        Repeats within the batch count as ``duplicate`` labels when ``repeats`` is given, else
        as ignored inputs. An input that fails ``check`` is a dead letter.
        """
        unique: dict[str, tuple[EventT, bytes]] = {}
        repeated = 0
        decoded = decode_batch(messages, model, SERVICE, self.dlq_topic, effects, check)
        for item, raw in decoded:
            if keep is not None and not keep(item):
                continue
            if item.event_id in unique:
                repeated += 1
            else:
                unique[item.event_id] = (item, raw)
        if repeats is not None:
            repeats["duplicate"] += repeated
        elif repeated:
            self.counts.ignored(repeated)
            self.duplicates.inc(repeated)
        return unique

    def _fits_target(self, label: Label) -> Label | Rejection:
        """The label as the target takes it, or why it does not fit (a dead letter)."""
        value = self.target.check(label.label)
        if isinstance(value, Rejection):
            return Rejection(value.reason, value.detail, label.event_id)
        return (
            label if same_value(value, label.label) else label.model_copy(update={"label": value})
        )

    def _fresh(
        self, items: dict[str, tuple[EventT, bytes]], states: dict[str, PendingEvent]
    ) -> dict[str, tuple[EventT, PendingEvent]]:
        """The stored items of events neither joined (or joining) nor expired, with their state.

        The rest count as ignored.
        """
        fresh = {
            i: (items[i][0], state)
            for i, state in states.items()
            if not (state.labeled or state.expired)
        }
        if len(fresh) < len(items):
            self.counts.ignored(len(items) - len(fresh))
        return fresh

    def _ask(
        self, effects: Effects, prediction: Prediction, state: PendingEvent, asked: set[str]
    ) -> bool:
        """Queue a labeling task if the prediction is unsure and none was made; True if queued.

        ``asked``: ids whose task is in flight or was marked after ``state`` was read.
        """
        if state.tasked or prediction.event_id in asked:
            return False
        unsure = uncertainty_worth_asking(prediction, self.task_uncertainty)
        if unsure is None:
            return False
        assert prediction.prediction is not None  # uncertainty_worth_asking checked it
        task = LabelingTask(
            event_id=prediction.event_id,
            entity_id=prediction.entity_id,
            features=prediction.features,
            prediction=prediction.prediction,
            uncertainty=unsure,
            explanation=prediction.explanation,
            model_version=prediction.model_version,
        )
        effects.emit(self.tasks_topic, prediction.entity_id, task)
        return True

    def _after_ack(self, effects: Effects, joined: list[str], tasked: list[str]) -> None:
        """Hold these ids in flight until the broker acknowledged the batch, then mark them."""
        self.joining.update(joined)
        self.tasking.update(tasked)
        self.counts.tasks(len(tasked))
        if joined or tasked:
            marks = _Marks(self, joined, tasked)
            effects.after_ack.append(marks.send)
            effects.before_commit.append(marks.wait)

    def _settle(self, joined: list[str], tasked: list[str]) -> Callable[[], None]:
        """Send the marks; what waits for Redis's reply comes back.

        Exchanges sent later see the marks; those sent earlier may not (``_Settled``).
        """
        wait = self.store.send_settle(joined, tasked)
        for settled in self._on_their_way:
            settled.joined.update(joined)
            settled.tasked.update(tasked)
        self.joining.difference_update(joined)
        self.tasking.difference_update(tasked)
        return wait


def run(settings: Settings | None = None) -> None:
    """Entry point: run labeling until SIGTERM or SIGINT."""
    runtime = bootstrap(SERVICE, settings)
    # labels come late anyway: fewer, bigger batches are worth a little latency
    runtime.settings = batching_fetches(runtime.settings, runtime.settings.labeling.fetch_wait_ms)
    labeling = Labeling(runtime)
    run_stream_service(
        runtime,
        labeling.handlers(),
        tick=labeling.sweep,
        tick_interval_s=runtime.settings.labeling.sweep_interval_s,
        joint=labeling.submit,
    )
