"""training: candidates learn ``training.examples`` side by side; the champion is published.

Every candidate (the declared model specs and a no-change baseline) learns every example
test-then-train, with prequential scores over a recent window: the leaderboard. The champion is
the candidate whose model serving gets; the selection rule (selection.py) switches it when
another is clearly ahead, with a version of trigger ``selection``.

Versions: an initial one when the registry has none, scheduled ones at doubling intervals from
``first_interval`` examples up to every ``publish_every`` (``small_publish_every`` while the
artifact is small; and after ``publish_interval_s`` with something learned), one per selection
switch, and one per drift event after which the champion's retrained model beat it on held-out
recent examples by a significant margin. Which drift kinds lead to retraining is configured
(``drift_reactions``); every candidate learning here is retrained, so the selection after a
drift is among models that all saw it. Candidates declared ``process = "own"`` learn in
processes training starts and watches (worker.py, processes.py).

State: the registry is the checkpoint. On start, training loads the newest version and resumes
each partition right after the last offset that any version learned (its lineage), so a crash
loses no example, and numbers the next version after the newest one, so none is published
twice. With each version it also saves the whole race (every candidate's model and scores) in
Redis, signed; a restart whose newest version is that one continues the race from it, else the
champion continues from the version's artifact and the others start afresh. Run one instance
per model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from functools import partial
from typing import Any, get_args

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from schemas import DriftEvent, ModelVersion, OffsetRange, TrainingExample
from schemas.models import ModelSpec, Trigger
from services.core import metrics, registry
from services.core.artifacts import artifact_store
from services.core.checkpoint import CheckpointStore
from services.core.exceptions import ArtifactError
from services.core.feature_schema import FeatureSchema
from services.core.kafka import batching_fetches
from services.core.model_specs import baseline_spec, build_model, load_specs
from services.core.rejection import Rejection
from services.core.runtime import Runtime, bootstrap, run_stream_service
from services.core.settings import Settings, TrainingSettings
from services.core.signing import Keyring
from services.core.stream import BatchHandler, Effects, decode, reject
from services.training.awaiting import AwaitingDrifts
from services.training.budget import TimeBudget
from services.training.leaderboard import Leaderboard
from services.training.learner import Candidate, Example, Learned, Race, RemoteCandidate
from services.training.processes import CandidateProcesses
from services.training.selection import SelectionRule, Switch, choose
from services.training.worker import checkpoint_store, run_worker

SERVICE = "training"
log = logging.getLogger(__name__)


def lineage_of(learned: Learned, topic: str) -> list[OffsetRange]:
    """The offset range of each partition learned from."""
    return [
        OffsetRange(topic=topic, partition=p, first=first, last=last)
        for p, (first, last) in sorted(learned.spans.items())
    ]


def resume_positions(history: Sequence[ModelVersion], topic: str) -> dict[int, int]:
    """Partition → next offset to learn: one past the last offset any version learned."""
    positions: dict[int, int] = {}
    for version in history:
        for span in version.lineage:
            if span.topic == topic:
                positions[span.partition] = max(positions.get(span.partition, 0), span.last + 1)
    return positions


def scheduled_interval(
    version: int, rules: TrainingSettings, artifact_bytes: int | None = None
) -> int:
    """Examples after ``version`` until the next scheduled one: doubling, up to every N.

    Derived from the version number (and the size of the last artifact), so a restarted
    service cuts versions at the same points of the stream as the one before it. A model whose
    artifact is small is cheap to publish and to load, so it is published more often: serving
    then answers with close to what training has learned.

    >>> rules = TrainingSettings(first_interval=10, publish_every=100, small_publish_every=30)
    >>> [scheduled_interval(v, rules) for v in range(1, 7)]
    [10, 20, 40, 80, 100, 100]
    >>> [scheduled_interval(v, rules, artifact_bytes=5_000) for v in range(1, 5)]
    [10, 20, 30, 30]
    >>> scheduled_interval(1, TrainingSettings(first_interval=0, publish_every=100))
    100
    """
    every = rules.publish_every
    if artifact_bytes is not None and artifact_bytes <= rules.small_model_bytes:
        every = min(every, rules.small_publish_every)
    if rules.first_interval == 0:
        return every
    doublings = min(max(version - 1, 0), 30)
    return min(every, rules.first_interval << doublings)


class Trainer:
    """The training service's state and handlers."""

    def __init__(self, runtime: Runtime) -> None:
        self.settings = settings = runtime.settings
        rules = settings.training
        self.model_name = settings.model_name
        self.examples_topic = runtime.topics("training_examples")
        self.dlq_topic = runtime.topics("dlq")
        self.schema = FeatureSchema.load(settings.ingest.feature_schema).served()
        self.target = self.schema.target
        self.specs = [*load_specs(rules.models, self.schema), baseline_spec(self.schema)]
        self.rule = SelectionRule.for_task(
            self.target.type,
            rules.selection_metric,
            rules.selection_min_gap,
            rules.selection_min_examples,
            rules.selection_cooldown,
            rules.selection_z,
        )
        history = [v for v in registry.read_versions(settings) if v.model_name == self.model_name]
        self.reacted = {v.drift_event_id for v in history if v.drift_event_id}
        # Drift events waiting for enough post-change examples, kept in Redis so that a
        # restart still reacts to a drift event whose offset was already committed.
        self.awaiting = AwaitingDrifts(runtime.redis, f"{settings.topic_prefix}{SERVICE}")
        self.positions = resume_positions(history, self.examples_topic)
        self.version = history[-1].version if history else 0
        self.redis = runtime.redis
        #: size of the last artifact published (None before the first): small ones go often
        self.artifact_bytes: int | None = None
        #: scheduled versions in a row not published (not serialisable, or no newer checkpoint
        #: of a champion in its own process): each waits one more interval
        self.unpublished = 0
        self.race = self._fresh_race(history[-1] if history else None)
        own = [spec.name for spec in self.specs if spec.process == "own"]
        self.workers = CandidateProcesses(settings, runtime.redis, own)
        self.checkpoints = CheckpointStore(
            runtime.redis,
            f"eddy:{settings.topic_prefix}{SERVICE}:{self.model_name}:checkpoint",
            settings.signing_key_bytes(),
            self._fingerprint(),
        )
        saved = self.checkpoints.load() if history else None
        state = saved.state if saved is not None else None
        if isinstance(state, dict) and state.get("version") == self.version:
            self.race = state["race"]
            self.race.build = self._build
            log.info("restored the race", extra={"version": self.version})
        elif history:
            log.info("resuming", extra={"version": self.version, "positions": self.positions})
        self.board = Leaderboard(
            runtime.redis, settings.topic_prefix, self.model_name, self.rule.metric
        )
        self.learned = metrics.EXAMPLES_LEARNED.labels(SERVICE, self.model_name)
        self.score_gauge = metrics.PREQUENTIAL.labels(SERVICE, self.model_name, self.rule.metric)
        metrics.VERSIONS_REJECTED.labels(SERVICE, self.model_name)  # series from the start
        for trigger in get_args(Trigger):
            metrics.VERSIONS_PUBLISHED.labels(SERVICE, self.model_name, trigger)
        self.last_published = time.monotonic()
        self.version_budget = TimeBudget(settings.training.version_time_share)
        #: when the checkpoint behind the last version was saved (a champion in its own process)
        self.published_checkpoint: float | None = None
        # one producer for the service's life (a new one waits ~0.5 s for its producer id),
        # which does not hold the loop up for each version's acknowledgement
        self.announcer = registry.Announcer(settings)
        if not history:
            self.publish("initial", description="untrained starting point")

    def _interval(self) -> int:
        """Examples until the next scheduled version."""
        return scheduled_interval(self.version, self.settings.training, self.artifact_bytes)

    def _build(self, spec: ModelSpec) -> Any:
        return build_model(spec, self.schema)

    def _fresh_race(self, latest: ModelVersion | None) -> Race:
        """New candidates; the newest version's model continues as the candidate it came from.

        The first candidate learning here starts as champion (the baseline, if every declared
        one has a process of its own): a candidate elsewhere has no model to publish yet.
        """
        rules = self.settings.training
        task = self.target.type
        candidates = [
            Candidate(spec, self._build(spec), task, rules.score_window, rules.recent_window)
            for spec in self.specs
            if spec.process == "shared"
        ]
        remote = [RemoteCandidate(spec, task) for spec in self.specs if spec.process == "own"]
        champion = candidates[0]
        if latest is not None:
            _data, model = registry.load_verified(
                latest, Keyring.of(self.settings), artifact_store(self.settings)
            )
            named = latest.spec.name if latest.spec is not None else None
            champion = next((c for c in candidates if c.name == named), candidates[0])
            champion.model = model
        return Race(candidates, champion.name, rules.recent_window, self._build, remote)

    def _fingerprint(self) -> str:
        """What the saved race embodies: another set of candidates or target starts afresh."""
        rules = self.settings.training
        embodied = [
            [spec.model_dump() for spec in self.specs],
            self.target.model_dump(),
            rules.score_window,
            rules.recent_window,
        ]
        return hashlib.sha256(json.dumps(embodied, sort_keys=True).encode()).hexdigest()

    def on_assign(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Start each examples partition where the newest versions' lineage ends."""
        for tp in partitions:
            if tp.topic == self.examples_topic:
                tp.offset = self.positions.get(tp.partition, OFFSET_BEGINNING)
        return partitions

    def tick(self) -> Effects:
        """Between batches: versions refused, the candidates' own processes, the board."""
        self.announcer.check()
        if self.race.remote:
            self.workers.supervise()
            self._read_rows()
            # a candidate's process catching up when no example comes must not wait for one
            switch = choose(self.race, self.rule)
            if switch is not None and switch.chosen in self.race.remote:
                self.switch_to(switch)
            self.board.update(self.race)  # their rows change between training's batches
        self.board.flush()
        return Effects()

    def _read_rows(self) -> None:
        """The newest scores of the candidates in processes of their own (none: nothing)."""
        for name, row in self.workers.rows().items():
            if name in self.race.remote:
                self.race.remote[name].row = row

    def on_examples(self, messages: Sequence[Message]) -> Effects:
        """Test-then-train every candidate on each example; publish and select as due.

        A label that does not fit the target is a dead letter: no learner ever sees it. The
        batch is learned in runs that end where something falls due (a drift reaction, a
        selection check, a scheduled version), so each happens after the same example as if
        the examples were learned one at a time.
        """
        effects = Effects()
        rules = self.settings.training
        examples = self._examples(messages, effects)
        race = self.race
        done = 0
        while done < len(examples):
            run = examples[done : done + self._until_due()]
            race.learn_many(run)
            done += len(run)
            if self.awaiting.waiting:
                for drift in self.awaiting.count_down(len(run)):
                    self.react_to(drift)
            if race.examples % rules.selection_every == 0:
                self._read_rows()  # a candidate elsewhere is judged on its newest row
                switch = choose(race, self.rule)
                if switch is not None:
                    self.switch_to(switch)
            if self._scheduled_due():
                self.publish("scheduled", description=f"after {self._interval()} examples")
        if (
            rules.publish_interval_s > 0
            and race.since_publish.count > 0
            and time.monotonic() - self.last_published >= rules.publish_interval_s
        ):
            self.publish("scheduled", description=f"after {rules.publish_interval_s:g} s")
        # once per batch: each increment takes the counter's lock, and a rate needs no finer grain
        self.learned.inc(len(examples))
        score = race.leader.value(self.rule.metric)
        if score is not None:
            self.score_gauge.set(score)
        self.board.update(race)
        return effects

    def _examples(self, messages: Sequence[Message], effects: Effects) -> list[Example]:
        """The batch's examples whose message and label are valid; the rest are dead letters."""
        check = self.target.check
        examples: list[Example] = []
        for message in messages:
            example = decode(message, TrainingExample, SERVICE, self.dlq_topic, effects)
            if example is None:
                continue
            label = check(example.label)
            if isinstance(label, Rejection):
                reject(
                    message,
                    SERVICE,
                    self.dlq_topic,
                    effects,
                    label.reason,
                    label.detail,
                    example.event_id,
                )
                continue
            examples.append(
                Example(example.features, label, message.partition() or 0, message.offset() or 0)
            )
        return examples

    def _scheduled_due(self) -> bool:
        """A scheduled version is due: enough examples, and versions within their time share."""
        enough = self.race.since_publish.count >= self._interval() * (1 + self.unpublished)
        return enough and self.version_budget.allows()

    def _until_due(self) -> int:
        """Examples until the next drift reaction, selection check or scheduled version.

        A version held back by its time share does not cut the batch: it is published after
        the run that ends once the share allows it.
        """
        race, rules = self.race, self.settings.training
        until = [rules.selection_every - race.examples % rules.selection_every]
        if self.version_budget.allows():
            until.append(self._interval() * (1 + self.unpublished) - race.since_publish.count)
        if self.awaiting.waiting:
            until.append(self.awaiting.next_due())
        return max(min(until), 1)

    def on_drift(self, messages: Sequence[Message]) -> Effects:
        """React to each drift event as configured for its kind: retrain, alert or ignore."""
        effects = Effects()
        reactions = self.settings.training.drift_reactions
        for message in messages:
            drift = decode(message, DriftEvent, SERVICE, self.dlq_topic, effects)
            if (
                drift is None
                or drift.model_name != self.model_name
                or drift.drift_id in self.reacted
            ):
                continue
            reaction = reactions[drift.kind]
            metrics.DRIFT_REACTIONS.labels(SERVICE, self.model_name, drift.kind, reaction).inc()
            if reaction != "retrain":
                self.reacted.add(drift.drift_id)
                if reaction == "alert":
                    log.warning(
                        "drift event: not retraining (drift_reactions)",
                        extra={
                            "drift_id": drift.drift_id,
                            "kind": drift.kind,
                            "subject": drift.subject,
                        },
                    )
                continue
            # Retraining needs the change's examples, at least twice the validation window.
            missing = 2 * self.settings.training.validation_window - drift.window
            if missing <= 0:
                self.react_to(drift)
            else:
                effects.after_ack.append(partial(self.awaiting.add, drift, missing))
        return effects

    def react_to(self, drift: DriftEvent) -> None:
        """Retrain every candidate on the recent window; keep each retrained model that wins.

        A retrained model replaces its candidate only when it beats the candidate's own
        predictions of the held-out examples by a significant margin (one-sided paired test at
        ``drift_alpha``): a fresh model that merely ties a long-trained one is thrown away.
        """
        rules = self.settings.training
        retrained = self.race.retrain_after_drift(
            drift.window + self.awaiting.waited(drift), rules.validation_window
        )
        self.awaiting.remove(drift)
        self.reacted.add(drift.drift_id)
        z_needed = _z_quantile(1 - rules.drift_alpha)
        champion = self.race.champion  # one in its own process is not retrained here
        adopted = [r for r in retrained if r.passes(z_needed, rules.min_gain)]
        verdicts = {r.candidate: round(r.improvement()[0], 4) for r in retrained}
        for winner in adopted:
            self.race.adopt(winner)
        if not any(r.candidate == champion for r in adopted):
            metrics.VERSIONS_REJECTED.labels(SERVICE, self.model_name).inc()
            log.warning(
                "drift: the champion's retrained model did not win",
                extra={"drift_id": drift.drift_id, "loss_saved": verdicts},
            )
            return
        won = next(r for r in adopted if r.candidate == champion)  # learning here
        gain, z = won.improvement()
        self.race.since_publish = Learned.of(won.window)
        self.publish(
            "drift",
            drift_event_id=drift.drift_id,
            description=f"retrained on recent examples after {drift.kind} drift of "
            f"{drift.subject}: trained on {len(won.window) - len(won.held_out)} examples, mean "
            f"loss {gain:.4f} lower on the {len(won.held_out)} held out (z {min(z, 99.0):.2f})",
            extra_metrics={"validation_loss_saved": gain, "validation_z": min(z, 99.0)},
        )
        log.info("drift: retrained champion published", extra={"version": self.version})

    def switch_to(self, switch: Switch) -> None:
        """Serve another candidate: publish its model as a ``selection`` version.

        The switch holds only if the version is published: a candidate in its own process with
        no checkpoint to trust yet, or a model that does not serialise, stays a challenger.
        """
        before = self.race.champion, self.race.switched_at
        self.race.champion = switch.chosen
        self.race.switched_at = self.race.examples
        published = self.publish(
            "selection",
            description=switch.reason(),
            extra_metrics={
                f"previous_{switch.metric}": switch.previous_value,
                f"chosen_{switch.metric}": switch.chosen_value,
                **({} if switch.z is None else {"selection_z": min(switch.z, 99.0)}),
            },
        )
        if published is None:
            self.race.champion, self.race.switched_at = before
            log.warning("selection: nothing of %s to publish yet", switch.chosen)
            return
        log.info("selection", extra={"reason": switch.reason(), "version": self.version})

    def publish(
        self,
        trigger: Trigger,
        drift_event_id: str | None = None,
        description: str = "",
        extra_metrics: dict[str, float] | None = None,
    ) -> ModelVersion | None:
        """Sign and announce the champion's model as the next version (None: it has none yet)."""
        with self.version_budget.spending():
            return self._publish(trigger, drift_event_id, description, extra_metrics)

    def _publish(
        self,
        trigger: Trigger,
        drift_event_id: str | None,
        description: str,
        extra_metrics: dict[str, float] | None,
    ) -> ModelVersion | None:
        race = self.race
        leader = race.leader
        checkpoint_at = None
        if leader.name in race.remote:
            store = self._remote_store(leader.name)
            if trigger == "scheduled" and store.saved_at() == self.published_checkpoint:
                self.unpublished += 1  # nothing newer saved yet: look again an interval later
                return None
            saved = store.load()
            snapshot = saved.state.model if saved and isinstance(saved.state, Candidate) else None
            checkpoint_at = saved.saved_at if saved else None
        else:
            snapshot = race.candidates[leader.name].model  # pickled now: the artifact is the copy
        if snapshot is None:
            log.warning("no checkpoint of %s to publish yet", leader.name)
            return None
        learned = race.since_publish
        scores = {
            **leader.values(),
            "examples": float(learned.count),
            **(extra_metrics or {}),
        }
        try:
            artifact = registry.serialize_river(snapshot)
        except Exception as error:  # no version this time; learning goes on
            log.error("model not serialised, no version: %r", error, extra={"model": leader.name})
            self.unpublished += 1
            return None
        self.unpublished = 0
        self.artifact_bytes = len(artifact)
        version = registry.publish(
            self.settings,
            self.model_name,
            artifact,
            trigger=trigger,
            parent_version=self.version or None,
            metrics=scores,
            drift_event_id=drift_event_id,
            lineage=lineage_of(learned, self.examples_topic),
            feature_names=list(self.schema.features),
            classes=self._classes(),
            task=self.target.type,
            spec=leader.spec,
            description=f"{leader.name}: {description}" if description else leader.name,
            version=self.version + 1,
            announcer=self.announcer,
        )
        self.version = version.version
        self.published_checkpoint = checkpoint_at
        race.since_publish = Learned()
        for span in version.lineage:
            self.positions[span.partition] = max(
                self.positions.get(span.partition, 0), span.last + 1
            )
        self._save_race()
        self.last_published = time.monotonic()
        metrics.VERSIONS_PUBLISHED.labels(SERVICE, self.model_name, trigger).inc()
        log.info("published", extra={"version": version.version, "trigger": trigger})
        return version

    def _remote_store(self, name: str) -> CheckpointStore:
        """The checkpoint of a candidate's own process: what training publishes of it."""
        return checkpoint_store(self.redis, self.settings, self.race.remote[name].spec, self.target)

    def _save_race(self) -> None:
        """Keep every candidate as of this version, so a restart continues the race from it."""
        state = {"version": self.version, "race": self.race}
        try:
            pickled = registry.deep_pickle(state)
        except Exception as error:  # the race goes on; a restart starts it afresh
            log.error("race not saved: %r", error, extra={"version": self.version})
            return
        self.checkpoints.save(
            pickled,
            {(self.examples_topic, p): offset for p, offset in self.positions.items()},
        )

    def _classes(self) -> list[Any] | None:
        """The classes declared, or those seen so far (None for regression)."""
        if not self.target.is_classification:
            return None
        if self.target.classes is not None:
            return list(self.target.classes)
        if self.target.type == "binary":
            return [False, True]
        return sorted(self.race.classes.values(), key=lambda c: (type(c).__name__, str(c)))


def _z_quantile(p: float) -> float:
    """The standard normal quantile (what a one-sided test at 1 - p needs)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


def handlers(runtime: Runtime, trainer: Trainer) -> dict[str, BatchHandler]:
    """Topic → handler for the training service."""
    return {
        runtime.topics("training_examples"): trainer.on_examples,
        runtime.topics("drift"): trainer.on_drift,
    }


def run(settings: Settings | None = None) -> None:
    """Entry point: resume from the registry, then learn until SIGTERM or SIGINT."""
    settings = settings or Settings()
    worker = settings.training.worker
    runtime = bootstrap(f"{SERVICE}-{worker}" if worker else SERVICE, settings)
    runtime.settings = batching_fetches(runtime.settings, runtime.settings.training.fetch_wait_ms)
    if runtime.settings.training.worker:
        run_worker(runtime, runtime.settings.training.worker)
        return
    trainer = Trainer(runtime)
    trainer.workers.start()
    try:
        run_stream_service(
            runtime, handlers(runtime, trainer), tick=trainer.tick, on_assign=trainer.on_assign
        )
    finally:
        trainer.workers.stop()
        try:
            trainer.announcer.close(timeout_s=5.0)
        except ArtifactError as error:  # a restart resumes from the versions that did land
            log.error("versions not announced at stop: %s", error)
