"""labeling: joins late labels with features and predictions into ``training.examples``.

Three topics, one consumer group: ``features`` and ``predictions`` wait in Redis (pending.py)
until their label comes or ``pending_ttl_s`` runs out; a label that comes before its features
waits too. Every label, joined or not, is counted (counts.py), and an unsure prediction becomes
a ``LabelingTask`` for a person. Delivery is at-least-once: what a batch decided is marked in
Redis only after its outputs are acknowledged, so a replayed batch may repeat an example (a
consumer de-duplicates by ``event_id``) but never loses one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import TypeVar

from confluent_kafka import Message

from schemas import FeatureEvent, Label, LabelingTask, Prediction
from services.core import metrics
from services.core.kafka import batching_fetches
from services.core.runtime import Runtime, bootstrap, run_stream_service
from services.core.settings import Settings
from services.core.stream import BatchHandler, Effects, decode
from services.labeling.counts import LabelingCounts, LabelOutcome
from services.labeling.examples import training_example_json
from services.labeling.pending import PendingEvent, PendingStore
from services.labeling.uncertainty import uncertainty_worth_asking

SERVICE = "labeling"
#: Expired events closed per sweep: bounds how long one sweep holds up consumption; the rest
#: wait for the next sweep.
SWEEP_LIMIT = 10_000

EventT = TypeVar("EventT", FeatureEvent, Prediction, Label)


class Labeling:
    """The handlers of the three topics and the expiry sweep, over one store.

    An example or task is marked in Redis only after the broker acknowledged it (marked earlier,
    a crash would lose it). Until then its id is "in flight", and the handlers of the same batch
    consult these sets, so two inputs of one batch cannot produce it twice.
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
        self.examples_topic = runtime.topics("training_examples")
        self.tasks_topic = runtime.topics("labeling_tasks")
        self.dlq_topic = runtime.topics("dlq")
        self.counts = LabelingCounts(SERVICE)
        self.duplicates = metrics.DUPLICATES.labels(SERVICE)
        self.joining: set[str] = set()
        self.tasking: set[str] = set()

    def handlers(self, runtime: Runtime) -> dict[str, BatchHandler]:
        """Topic → handler."""
        return {
            runtime.topics("features"): self.on_features,
            runtime.topics("predictions"): self.on_predictions,
            runtime.topics("labels"): self.on_labels,
        }

    def on_features(self, messages: Sequence[Message]) -> Effects:
        """Store features; join any label parked for them, else ask for one if unsure."""
        effects = Effects()
        events = self._decode_unique(messages, FeatureEvent, effects)
        fresh = self._open(events, self.store.add_features)
        joined: list[str] = []
        tasked: list[str] = []
        for event_id, (event, state) in fresh.items():
            if state.early_label is not None:
                key, example = training_example_json(
                    events[event_id][1], state.early_label, state.prediction
                )
                effects.emit_json(self.examples_topic, key, example)
                joined.append(event_id)
            elif state.prediction is not None:
                prediction = Prediction.model_validate_json(state.prediction)
                if self._ask(effects, event, prediction, state):
                    tasked.append(event_id)
        self.counts.labels(Counter({"joined": len(joined)}))
        self._after_ack(effects, joined, tasked)
        return effects

    def on_predictions(self, messages: Sequence[Message]) -> Effects:
        """Store champion predictions; ask for a label if one is unsure and its features are here.

        Only the champion's prediction is the served one; a challenger's is monitoring's concern.
        """
        effects = Effects()
        predictions = self._decode_unique(
            messages, Prediction, effects, keep=lambda p: p.variant == "champion"
        )
        fresh = self._open(predictions, self.store.add_predictions)
        tasked: list[str] = []
        for event_id, (prediction, state) in fresh.items():
            if state.features is None or state.early_label is not None:
                continue  # the features' handler asks, or joins, when they come
            if uncertainty_worth_asking(prediction, self.task_uncertainty) is None:
                continue  # parse the stored features only for the few worth a task
            event = FeatureEvent.model_validate_json(state.features)
            if self._ask(effects, event, prediction, state):
                tasked.append(event_id)
        self._after_ack(effects, [], tasked)
        return effects

    def on_labels(self, messages: Sequence[Message]) -> Effects:
        """Join each label with its features if they are here, else park it until they come."""
        effects = Effects()
        outcomes: Counter[LabelOutcome] = Counter()
        labels = self._decode_unique(messages, Label, effects, repeats=outcomes)
        joining = [i for i in labels if i in self.joining]
        outcomes["duplicate"] += len(joining)  # its event is being joined by a batch in flight
        known = self.store.park_labels(
            {i: raw for i, (_label, raw) in labels.items() if i not in self.joining}
        )
        ready: list[tuple[str, PendingEvent]] = []
        for event_id, state in known.items():
            if state.labeled or state.early_label is not None:
                # a parked label stays until its join is acknowledged: it also stands for a label
                # being joined in this very batch, or one another instance parked first
                outcomes["duplicate"] += 1
            elif state.expired:
                outcomes["expired"] += 1
            elif state.features is not None:
                ready.append((event_id, state))
            else:
                outcomes["early"] += 1  # parked until its features come
        joined: list[str] = []
        for event_id, state in ready:
            assert state.features is not None
            key, example = training_example_json(
                state.features, labels[event_id][1], state.prediction
            )
            effects.emit_json(self.examples_topic, key, example)
            joined.append(event_id)
        outcomes["joined"] += len(joined)
        self.counts.labels(outcomes)
        self._after_ack(effects, joined, [])
        return effects

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
    ) -> dict[str, tuple[EventT, bytes]]:
        """Valid inputs by event id with their raw JSON, the first of each id in the batch.

        Repeats within the batch count as ``duplicate`` labels when ``repeats`` is given, else
        as ignored inputs.
        """
        unique: dict[str, tuple[EventT, bytes]] = {}
        repeated = 0
        for message in messages:
            item = decode(message, model, SERVICE, self.dlq_topic, effects)
            if item is None or (keep is not None and not keep(item)):
                continue
            if item.event_id in unique:
                repeated += 1
            else:
                unique[item.event_id] = (item, message.value() or b"")
        if repeats is not None:
            repeats["duplicate"] += repeated
        elif repeated:
            self.counts.ignored(repeated)
            self.duplicates.inc(repeated)
        return unique

    def _open(
        self,
        items: dict[str, tuple[EventT, bytes]],
        store: Callable[[dict[str, bytes]], dict[str, PendingEvent]],
    ) -> dict[str, tuple[EventT, PendingEvent]]:
        """Store the items of events neither joined (or joining) nor expired; each with its state.

        The rest count as ignored.
        """
        states = store({i: raw for i, (_item, raw) in items.items() if i not in self.joining})
        fresh = {
            i: (items[i][0], state)
            for i, state in states.items()
            if not (state.labeled or state.expired)
        }
        if len(fresh) < len(items):
            self.counts.ignored(len(items) - len(fresh))
        return fresh

    def _ask(
        self, effects: Effects, event: FeatureEvent, prediction: Prediction, state: PendingEvent
    ) -> bool:
        """Queue a labeling task if the prediction is unsure and none was made; True if queued."""
        if state.tasked or event.event_id in self.tasking:
            return False
        unsure = uncertainty_worth_asking(prediction, self.task_uncertainty)
        if unsure is None:
            return False
        assert prediction.prediction is not None  # uncertainty_worth_asking checked it
        task = LabelingTask(
            event_id=event.event_id,
            entity_id=event.entity_id,
            features=event.features,
            prediction=prediction.prediction,
            uncertainty=unsure,
            model_version=prediction.model_version,
        )
        effects.emit(self.tasks_topic, event.entity_id, task)
        return True

    def _after_ack(self, effects: Effects, joined: list[str], tasked: list[str]) -> None:
        """Hold these ids in flight until the broker acknowledged the batch, then mark them."""
        self.joining.update(joined)
        self.tasking.update(tasked)
        self.counts.tasks(len(tasked))
        if joined or tasked:
            effects.after_ack.append(lambda: self._settle(joined, tasked))

    def _settle(self, joined: list[str], tasked: list[str]) -> None:
        self.store.settle(joined, tasked)
        self.joining.difference_update(joined)
        self.tasking.difference_update(tasked)


def handlers(runtime: Runtime) -> tuple[dict[str, BatchHandler], Callable[[], Effects]]:
    """Topic → handler for the labeling service, and its expiry sweep."""
    labeling = Labeling(runtime)
    return labeling.handlers(runtime), labeling.sweep


def run(settings: Settings | None = None) -> None:
    """Entry point: run labeling until SIGTERM or SIGINT."""
    runtime = bootstrap(SERVICE, settings)
    # labels come late anyway: fewer, bigger batches are worth a little latency
    runtime.settings = batching_fetches(runtime.settings, runtime.settings.labeling.fetch_wait_ms)
    topic_handlers, sweep = handlers(runtime)
    run_stream_service(
        runtime,
        topic_handlers,
        tick=sweep,
        tick_interval_s=runtime.settings.labeling.sweep_interval_s,
    )
