"""The one Kafka loop every service runs: consume, dispatch to handlers, produce, commit.

Delivery rule (DESIGN.md): a batch's offsets are committed only after everything its handlers
produced is acknowledged by the broker, after the handlers' ``after_ack`` effects ran, and after
what those started finished (``Effects.before_commit``). A crash anywhere before the commit
replays the batch; handlers make that harmless by being idempotent by ``event_id``.

Acknowledgements are pipelined: while a batch's outputs travel to the broker, the next batches
are already handled (at most ``EDDY_KAFKA__MAX_IN_FLIGHT`` batches). Batches settle strictly in
order, so an offset is never committed ahead of an unacknowledged earlier batch; a handler that
de-duplicates must count ids of in-flight batches as seen. The offsets of settled batches are
committed together, at most once per ``EDDY_KAFKA__COMMIT_INTERVAL_MS``: each commit is a
request the broker must serve, and committing a little later only means replaying a little
more after a crash. Before partitions are revoked and on shutdown, everything in flight is
settled and committed. With a transactional id the outputs and offsets of each batch commit
atomically instead (exactly-once for ``read_committed`` consumers).

A joint handler may defer a batch's effects while its store works on them: the loop hands it
the next batch first, then takes the deferred effects, so the store and the service work at
the same time. Deferred batches are finished in order, before the loop waits for messages,
ticks, or settles everything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from services.core import metrics
from services.core.exceptions import DeliveryError, EddyError
from services.core.health import HEALTH
from services.core.kafka import make_consumer, make_producer
from services.core.settings import Settings
from services.core.stream import (
    BatchHandler,
    DeferredEffects,
    Effects,
    JointHandler,
    Outbound,
    StopSignal,
    reject,
)
from services.core.topics import Topics

log = logging.getLogger(__name__)

#: Called after a batch's handlers with the batch's positions (partition → next offset); returns
#: effects to run once that batch is acknowledged.
AfterBatch = Callable[[dict[tuple[str, int], int]], list[Callable[[], None]]]


@dataclass
class _InFlight:
    """A handled batch whose outputs are on their way to the broker."""

    remaining: int
    commit: list[TopicPartition]
    after_ack: list[Callable[[], None]]
    before_commit: list[Callable[[], None]]
    produced: Counter[str] = field(default_factory=Counter)
    sent_at: float = field(default_factory=time.monotonic)
    #: the first delivery error of its outputs: such a batch never settles, nor do later ones
    failed: KafkaError | None = None


@dataclass
class _Deferred:
    """A batch whose joint handler is still working out its effects."""

    effects: DeferredEffects
    offsets: dict[tuple[str, int], int]
    seconds: float
    #: the batch, by topic: handled again message by message if its effects fail
    batches: Mapping[str, Sequence[Message]]


#: Seconds a stopping service waits for the broker to acknowledge its last batches.
STOP_FLUSH_S = 5.0


class StreamProcessor:
    """Runs handlers on batches from their topics with Eddy's delivery rule."""

    def __init__(
        self,
        settings: Settings,
        service: str,
        group_id: str,
        handlers: dict[str, BatchHandler],
        transactional_id: str | None = None,
        stop: StopSignal | None = None,
        joint: JointHandler | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.handlers = handlers
        self.joint = joint
        self.stop = stop or StopSignal()
        self.transactional = transactional_id is not None
        # the loop hands over a whole batch at once: lingering longer would only delay it
        overrides: dict[str, object] = {"linger.ms": settings.kafka.batch_linger_ms}
        if transactional_id:
            overrides["transactional.id"] = transactional_id
        self.producer: Producer = make_producer(settings, **overrides)
        self.consumer: Consumer = make_consumer(
            settings,
            group_id,
            **{
                "isolation.level": "read_committed",
                # librdkafka reports each partition's lag in its statistics; served on poll
                "statistics.interval.ms": settings.kafka.lag_interval_ms,
                "stats_cb": self._on_statistics,
            },
        )
        self.max_in_flight = 1 if self.transactional else settings.kafka.max_in_flight
        self._in_flight: deque[_InFlight] = deque()
        self._deferred: deque[_Deferred] = deque()
        # offsets of settled batches not committed yet, the latest per partition
        self._settled: dict[tuple[str, int], TopicPartition] = {}
        # what settled batches' effects still wait for before their offsets may be committed
        self._unconfirmed: deque[Callable[[], None]] = deque()
        self._commit_interval_s = settings.kafka.commit_interval_ms / 1000
        self._last_commit = time.monotonic()
        self._delivery_errors: list[KafkaError] = []
        self._delivery_timeout_s = settings.kafka.delivery_timeout_s
        self._batch_seconds = metrics.BATCH_SECONDS.labels(service)
        self._after_batch: AfterBatch | None = None
        self._consumed = {t: metrics.MESSAGES_CONSUMED.labels(service, t) for t in handlers}
        self._dlq_topic = Topics(settings.topic_prefix)("dlq")
        self.batches = 0

    def run(
        self,
        tick: Callable[[], Effects] | None = None,
        tick_interval_s: float = 1.0,
        on_assign: Callable[[list[TopicPartition]], list[TopicPartition]] | None = None,
        after_batch: AfterBatch | None = None,
    ) -> None:
        """Process until stopped.

        ``tick`` runs between batches every ``tick_interval_s`` (timers, expiry sweeps); its
        effects are produced and acknowledged like a batch's. ``on_assign`` may return the
        assigned partitions with the offsets to start from, for a service that keeps its
        position with its own state. ``after_batch`` runs after every batch's handlers with the
        positions after it; what it returns runs once that batch is acknowledged (saving a
        checkpoint of the state at those positions).
        """
        self._after_batch = after_batch
        if self.transactional:
            self.producer.init_transactions(30)

        def assigned(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            HEALTH.assigned += len(partitions)
            if on_assign is not None:
                consumer.assign(on_assign(partitions))

        def revoked(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            HEALTH.assigned = max(HEALTH.assigned - len(partitions), 0)
            self.settle_all()  # commit what was handled while the partitions are still ours

        def lost(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            # no longer ours (a broker that restarted, a session that timed out): nothing may be
            # committed for them; whoever gets them runs those batches again
            HEALTH.assigned = max(HEALTH.assigned - len(partitions), 0)
            gone = {(tp.topic, tp.partition) for tp in partitions}
            self._settled = {k: v for k, v in self._settled.items() if k not in gone}
            log.warning(
                "partitions lost: their uncommitted batches run again where they are assigned",
                extra={"service": self.service, "partitions": len(partitions)},
            )

        self.consumer.subscribe(
            list(self.handlers), on_assign=assigned, on_revoke=revoked, on_lost=lost
        )
        log.info("consuming", extra={"service": self.service, "topics": list(self.handlers)})
        last_tick = time.monotonic()
        try:
            while not self.stop.is_set():
                messages = self._next_batch()
                HEALTH.beat(len(messages))
                if messages:
                    self.process(messages)
                else:
                    self._settle(block=False)
                if tick is not None and time.monotonic() - last_tick >= tick_interval_s:
                    last_tick = time.monotonic()
                    self._finish_deferred()  # a tick sees the store as the batches left it
                    self._confirm()
                    effects = tick()
                    self._send(effects, [])
        finally:
            self.close()

    def _on_statistics(self, raw: str) -> None:
        """Export each assigned partition's consumer lag from librdkafka's statistics."""
        try:
            topics = json.loads(raw).get("topics", {})
        except ValueError:
            return
        waiting = 0
        for topic, entry in topics.items():
            for partition, stats in entry.get("partitions", {}).items():
                lag = stats.get("consumer_lag", -1)
                if partition != "-1" and lag >= 0:
                    metrics.CONSUMER_LAG.labels(self.service, topic, partition).set(lag)
                    waiting += lag
        HEALTH.lag = waiting

    def _next_batch(self) -> list[Message]:
        """Whatever is already fetched, up to a batch; else wait for the first message only.

        ``consume(n, timeout)`` waits the whole timeout unless n messages come, which would add
        the timeout to every event's latency at low rates. A deferred batch is finished before
        waiting: nothing would come to overlap with it.
        """
        size = self.settings.kafka.batch_size
        messages: list[Message] = self.consumer.consume(size, 0)
        if messages:
            return messages
        self._finish_deferred()
        # with batches in flight, wait briefly: their acks are settled between polls
        wait = 0.005 if self._in_flight else self.settings.kafka.poll_timeout_s
        first = self.consumer.poll(wait)
        if first is None:
            return []
        return [first, *self.consumer.consume(size - 1, 0)] if size > 1 else [first]

    def process(self, messages: Sequence[Message]) -> None:
        """Handle one consumed batch: effects produced now, offsets committed once acknowledged."""
        started = time.perf_counter()
        by_topic: dict[str, list[Message]] = defaultdict(list)
        offsets: dict[tuple[str, int], int] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error", extra={"error": str(error)})
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            assert topic is not None and partition is not None and offset is not None
            by_topic[topic].append(message)
            offsets[(topic, partition)] = offset + 1
        if not offsets:
            return
        for topic, batch in by_topic.items():
            self._consumed[topic].inc(len(batch))
        if self.joint is not None:
            try:
                outcome = self.joint(by_topic)
            except EddyError:
                raise
            except Exception as error:
                self._finish_deferred()  # batches finish in order
                outcome = self._joint_one_by_one(by_topic, error)
            if not isinstance(outcome, Effects):
                seconds = time.perf_counter() - started
                self._deferred.append(_Deferred(outcome, offsets, seconds, by_topic))
                while len(self._deferred) > 1:  # one batch ahead, no more
                    self._finish_oldest()
                return
            effects = outcome
        else:
            effects = Effects()
            for topic, batch in by_topic.items():
                effects.extend(self._guarded(self.handlers[topic], batch))
        self._finish(effects, offsets, time.perf_counter() - started)

    def _guarded(self, handler: BatchHandler, batch: Sequence[Message]) -> Effects:
        """The handler's effects; a message it fails on becomes a dead letter, not a crash.

        Handlers turn the bad input they know of into dead letters themselves; this catches the
        rest (a bug, a value nobody thought of). The batch is then handled again message by
        message, so only the messages that fail alone are rejected (``handler_error``, with the
        exception), and the loop goes on: one message cannot stop a service or make it crash
        at the same offset after every restart. Eddy's own errors (a stop during an outage, a
        delivery failure) still end the service, as they are about the service, not a message.

        The messages before the failing one were handled once already when the batch failed:
        state a handler keeps in memory (a model that learned, a counter) may have seen them
        twice. The outputs are not repeated (those of the failed attempt are dropped), and a
        handler that must not double-count checks its inputs before it changes its state, as
        training does with its labels.
        """
        try:
            return handler(batch)
        except EddyError:
            raise
        except Exception as error:
            log.exception(
                "a handler failed on a batch; handling its messages one by one",
                extra={"service": self.service, "messages": len(batch), "error": repr(error)},
            )
        effects = Effects()
        for message in batch:
            try:
                effects.extend(handler([message]))
            except EddyError:
                raise
            except Exception as error:
                reject(
                    message,
                    self.service,
                    self._dlq_topic,
                    effects,
                    "handler_error",
                    f"{type(error).__name__}: {error}",
                )
        return effects

    def _finish(
        self, effects: Effects, offsets: dict[tuple[str, int], int], seconds: float
    ) -> None:
        """Send a handled batch's effects; it settles once they are acknowledged."""
        started = time.perf_counter()
        if self._after_batch is not None:
            effects.after_ack.extend(self._after_batch(offsets))
        self._send(effects, [TopicPartition(t, p, o) for (t, p), o in offsets.items()])
        self.batches += 1
        self._batch_seconds.observe(seconds + time.perf_counter() - started)

    def _joint_one_by_one(
        self, by_topic: Mapping[str, Sequence[Message]], error: Exception
    ) -> Effects:
        """The joint handler failed on a batch: each message alone, those that fail rejected."""
        log.error(
            "a handler failed on a batch; handling its messages one by one",
            exc_info=error,
            extra={"service": self.service, "error": repr(error)},
        )
        assert self.joint is not None
        effects = Effects()
        for topic, batch in by_topic.items():
            for message in batch:
                try:
                    outcome = self.joint({topic: [message]})
                    effects.extend(outcome if isinstance(outcome, Effects) else outcome.result())
                except EddyError:
                    raise
                except Exception as failure:
                    reject(
                        message,
                        self.service,
                        self._dlq_topic,
                        effects,
                        "handler_error",
                        f"{type(failure).__name__}: {failure}",
                    )
        return effects

    def _finish_oldest(self) -> None:
        deferred = self._deferred.popleft()
        started = time.perf_counter()
        try:
            effects = deferred.effects.result()
        except EddyError:
            raise
        except Exception as error:
            effects = self._joint_one_by_one(deferred.batches, error)
        self._finish(effects, deferred.offsets, deferred.seconds + time.perf_counter() - started)

    def _finish_deferred(self) -> None:
        """Finish every deferred batch, in order (before waiting, ticking, revoking, stopping)."""
        while self._deferred:
            self._finish_oldest()

    def _send(self, effects: Effects, commit: list[TopicPartition]) -> None:
        """Produce a batch's outputs; it settles (after-ack effects, commit) once acknowledged."""
        if self.transactional:
            self._send_in_transaction(effects, commit)
            return
        batch = _InFlight(len(effects.outputs), commit, effects.after_ack, effects.before_commit)

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                self._delivery_errors.append(error)
                batch.failed = batch.failed or error
            batch.remaining -= 1

        self._produce(effects.outputs, delivered, batch.produced)
        self._in_flight.append(batch)
        self._settle(block=len(self._in_flight) > self.max_in_flight)

    def _produce(
        self,
        outputs: Sequence[Outbound],
        on_delivery: Callable[[KafkaError | None, Message], None] | None,
        produced: Counter[str],
    ) -> None:
        produce, poll = self.producer.produce, self.producer.poll
        for out in outputs:
            while True:
                try:
                    produce(out.topic, out.value, out.key, on_delivery=on_delivery)
                    break
                except BufferError:
                    poll(0.05)  # the local queue is full: let deliveries drain, then retry
            produced[out.topic] += 1

    def _settle(self, block: bool) -> None:
        """Settle acknowledged batches in order; with ``block``, until few enough are in flight.

        A batch unacknowledged for ``delivery_timeout_s`` ends the service (``DeliveryError``):
        a broker that restarted without its data leaves an idempotent producer unable to send
        again, and waiting on would look alive while doing nothing. Nothing unacknowledged is
        committed, so a restart runs those batches again.
        """
        self.producer.poll(0)  # serves delivery callbacks
        while True:
            if self._delivery_errors:
                errors, self._delivery_errors = self._delivery_errors, []
                raise DeliveryError(
                    f"{len(errors)} messages failed (first: {errors[0]}); offsets not committed"
                )
            while self._in_flight and self._in_flight[0].remaining <= 0:
                if self._in_flight[0].failed is not None:
                    # reported above already; on a later call (the stop after that error) it
                    # must still not settle: its offsets would skip the outputs that failed
                    raise DeliveryError(
                        f"a batch's outputs failed ({self._in_flight[0].failed}); "
                        "offsets not committed"
                    )
                self._complete(self._in_flight.popleft())
            if time.monotonic() - self._last_commit >= self._commit_interval_s:
                self._commit_settled(asynchronous=True)
            self._check_stalled()
            if not block or len(self._in_flight) <= self.max_in_flight - 1:
                return
            self.producer.poll(0.01)

    def _check_stalled(self) -> None:
        if self._in_flight:
            waited = time.monotonic() - self._in_flight[0].sent_at
            if waited > self._delivery_timeout_s:
                raise DeliveryError(
                    f"the broker acknowledged none of this service's messages for {waited:.0f} s "
                    "(a broker restarted without its data leaves the producer unable to go on); "
                    "stopping with nothing unacknowledged committed: start the service again"
                )

    def _complete(self, batch: _InFlight) -> None:
        for effect in batch.after_ack:
            effect()
        self._unconfirmed.extend(batch.before_commit)
        for position in batch.commit:  # batches settle in order: a later offset replaces
            self._settled[(position.topic, position.partition)] = position
        for topic, count in batch.produced.items():
            metrics.MESSAGES_PRODUCED.labels(self.service, topic).inc(count)

    def _commit_settled(self, asynchronous: bool) -> None:
        """Commit the offsets of every settled batch (all acknowledged, after-ack effects run)."""
        self._confirm()
        if self._settled:
            offsets, self._settled = list(self._settled.values()), {}
            if asynchronous:  # two calls: confluent-kafka's overloads want a literal flag
                self.consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            self._last_commit = time.monotonic()

    def _confirm(self) -> None:
        """Wait for what settled batches' after-ack effects started (``Effects.before_commit``)."""
        while self._unconfirmed:
            self._unconfirmed.popleft()()

    def settle_all(self, wait_s: float | None = None) -> None:
        """Wait for every batch in flight (up to ``wait_s``) and commit it: a revocation, a stop."""
        self._finish_deferred()
        if self._in_flight:
            wait_s = self._delivery_timeout_s if wait_s is None else wait_s
            self.producer.flush(wait_s)
            self._settle(block=False)
            if self._in_flight:
                self._commit_settled(asynchronous=False)  # what was acknowledged
                raise DeliveryError(
                    f"{len(self._in_flight)} batches unacknowledged after {wait_s:.0f} s: not "
                    "committed, they run again at the next start"
                )
        self._commit_settled(asynchronous=False)

    def _send_in_transaction(self, effects: Effects, commit: list[TopicPartition]) -> None:
        produced: Counter[str] = Counter()
        try:
            self.producer.begin_transaction()
            self._produce(effects.outputs, None, produced)
            if commit:
                self.producer.send_offsets_to_transaction(
                    commit, self.consumer.consumer_group_metadata(), 30
                )
            self.producer.commit_transaction(60)
        except KafkaException as exc:
            raise self._transaction_failed(exc) from None
        self._complete(_InFlight(0, [], effects.after_ack, effects.before_commit, produced))
        self._confirm()  # the offsets are committed already, with the transaction

    def _transaction_failed(self, exc: KafkaException) -> DeliveryError:
        """What ends the service when a transaction fails: nothing of it was committed."""
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if error is not None and error.code() == KafkaError._FENCED:
            return DeliveryError(
                "fenced: another instance started with this one's transactional id and took "
                "over; instances running at once need names of their own "
                "(EDDY_SERVING__INSTANCE, else the host name)"
            )
        if error is not None and error.txn_requires_abort():
            with contextlib.suppress(KafkaException):  # else the broker aborts it in time
                self.producer.abort_transaction(10)
        return DeliveryError(
            f"a transaction failed ({exc}); its batch runs again at the next start"
        )

    def close(self) -> None:
        """Settle what is in flight, then leave the group (so partitions move at once).

        It waits at most ``STOP_FLUSH_S`` for the last acknowledgements, so a service ends
        within its grace period whatever state the broker is in.
        """
        try:
            self.settle_all(STOP_FLUSH_S)
        finally:
            self.consumer.close()
            try:
                self.producer.flush(1.0)
            except KafkaException as exc:  # a fenced or failed transactional producer
                log.warning("producer not flushed", extra={"error": str(exc)})
            log.info("stopped", extra={"service": self.service, "batches": self.batches})
