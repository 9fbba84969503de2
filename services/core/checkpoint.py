"""A service's in-memory state, saved in Redis with the input positions it has seen.

A service whose state is learned from its inputs (monitoring's detectors) would otherwise
forget it on a restart and re-learn from the committed offsets, missing a change that straddles
the restart. With a checkpoint it restores the state and replays its inputs from the
checkpoint's positions, so it reaches the same decisions at the same messages (with the same
ids, which consumers de-duplicate by).

The state is a pickle, and unpickling runs code: like a model artifact it is signed with the
registry key (HMAC-SHA256, over the state, its positions and what it was saved for), and one
that does not verify is ignored with a warning. So is one saved under other settings
(``fingerprint``): the state embodies them, and new settings must start afresh.
"""

from __future__ import annotations

import hmac
import json
import logging
import pickle
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis
from confluent_kafka import TopicPartition

from services.core.registry import deep_pickle, sign
from services.core.stream import Effects

log = logging.getLogger(__name__)

#: Input partition → the next offset to read.
Positions = dict[tuple[str, int], int]


@dataclass(frozen=True)
class Checkpoint:
    """A restored state and where the inputs it has seen end."""

    state: Any
    positions: Positions
    saved_at: float


def _encode_positions(positions: Mapping[tuple[str, int], int]) -> bytes:
    ordered = sorted(positions.items())
    return json.dumps(
        [[topic, partition, offset] for (topic, partition), offset in ordered]
    ).encode()


def _decode_positions(raw: bytes) -> Positions:
    return {
        (str(topic), int(partition)): int(offset) for topic, partition, offset in json.loads(raw)
    }


class CheckpointStore:
    """One checkpoint under one Redis key, signed; each save replaces the last."""

    def __init__(self, client: redis.Redis, key: str, signing_key: bytes, fingerprint: str) -> None:
        self.client = client
        self.key = key
        self.signing_key = signing_key
        self.fingerprint = fingerprint.encode()

    def _signature(self, state: bytes, positions: bytes) -> str:
        return sign(b"\x00".join((self.fingerprint, positions, state)), self.signing_key)

    def save(self, state: bytes, positions: Mapping[tuple[str, int], int]) -> None:
        """Store a pickled state with the positions it covers (one command: never half of it)."""
        encoded = _encode_positions(positions)
        self.client.hset(
            self.key,
            mapping={
                "state": state,
                "positions": encoded,
                "fingerprint": self.fingerprint,
                "signature": self._signature(state, encoded),
                "saved_at": repr(time.time()),
            },
        )

    def saved_at(self) -> float | None:
        """When the checkpoint was saved (None: there is none), without reading the state."""
        raw = self.client.hget(self.key, "saved_at")
        return float(cast(bytes, raw)) if raw is not None else None

    def load(self) -> Checkpoint | None:
        """The saved checkpoint; None if there is none, or it is not one to trust (logged)."""
        # the services' client answers bytes (no decode_responses)
        fields = cast(dict[bytes, bytes], self.client.hgetall(self.key))
        if not fields:
            return None
        where = {"key": self.key}
        state, encoded = fields.get(b"state", b""), fields.get(b"positions", b"")
        if fields.get(b"fingerprint") != self.fingerprint:
            log.warning("checkpoint ignored: saved under other settings", extra=where)
            return None
        expected = self._signature(state, encoded).encode()
        if not hmac.compare_digest(fields.get(b"signature", b""), expected):
            log.warning("checkpoint ignored: its signature does not verify", extra=where)
            return None
        try:
            return Checkpoint(
                pickle.loads(state), _decode_positions(encoded), float(fields[b"saved_at"])
            )
        except Exception as error:  # signed by us, so saved by another version of the code
            log.warning("checkpoint ignored: unreadable", extra={**where, "error": repr(error)})
            return None


class Checkpointing:
    """Snapshots a state at most every ``interval_s``, saved once what it covers is acknowledged.

    The processor calls ``after_batch`` with the positions after each batch, and ``tick``
    between batches. A snapshot is the state at exactly the positions seen so far; it is
    saved as an after-ack effect of the batch (or tick) that takes it, which settles after every
    earlier batch, so a checkpoint never covers an output the broker has not acknowledged. The
    tick saves a stream that went quiet after its last batch. ``on_assign`` starts each
    partition of the first assignment at the checkpoint's position; later assignments follow
    the committed offsets, which by then are past it.

    With a ``share``, a snapshot that is cheap to take comes sooner than ``interval_s``: as
    soon as the last one's cost is at most ``share`` of the time since (never within
    ``floor_s``). A young model saves often, a grown one as its size allows.
    """

    def __init__(
        self,
        store: CheckpointStore,
        snapshot: Callable[[], Any],
        interval_s: float,
        positions: Positions | None = None,
        clock: Callable[[], float] = time.monotonic,
        share: float = 0.0,
        floor_s: float = 0.0,
    ) -> None:
        self.store = store
        self.snapshot = snapshot
        self.interval_s = interval_s
        self.share = share
        self.floor_s = floor_s
        self.cost_s = 0.0  # what the last snapshot took to take and pickle
        self.clock = clock
        # a restored state has seen its checkpoint's positions, read here or not since
        self.seen: Positions = dict(positions or {})
        self.resume_at: Positions = dict(self.seen)
        self._last = clock()
        self._unsaved = False

    def after_batch(self, positions: Positions) -> list[Callable[[], None]]:
        """After a batch: the effect that saves a snapshot, when one is due (else nothing)."""
        self.seen.update(positions)
        self._unsaved = True
        return self._save_if_due()

    def tick(self) -> Effects:
        """Between batches: save what the last batches taught, if due and not saved yet."""
        return Effects(after_ack=self._save_if_due())

    def due_in(self) -> float:
        """Seconds after the last snapshot the next one is due."""
        if self.share <= 0:
            return self.interval_s
        return min(self.interval_s, max(self.floor_s, self.cost_s / self.share))

    def _save_if_due(self) -> list[Callable[[], None]]:
        now = self.clock()
        if not self._unsaved or now - self._last < self.due_in():
            return []
        self._last, self._unsaved = now, False
        started = time.perf_counter()
        try:
            state = deep_pickle(self.snapshot())
        except Exception as error:  # a state that cannot be saved must not stop the service
            log.error("checkpoint not saved: %r", error, extra={"key": self.store.key})
            return []
        self.cost_s = time.perf_counter() - started
        at = dict(self.seen)
        return [lambda: self.store.save(state, at)]

    def on_assign(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The first assignment resumes where the checkpoint ends; later ones where committed."""
        for tp in partitions:
            position = self.resume_at.get((tp.topic, tp.partition))
            if position is not None:
                tp.offset = position
        if partitions and self.resume_at:
            log.info(
                "resuming from checkpoint",
                extra={"positions": {f"{t}:{p}": o for (t, p), o in self.resume_at.items()}},
            )
        self.resume_at = {}
        return partitions
