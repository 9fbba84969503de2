"""The labeling join's state in Redis: what waits for a label, what was joined, what expired.

Each event id has one hash: ``served`` (the champion's prediction, with the features it was made
on), ``tasked``, ``label`` (a label parked before its prediction) and, once the event is closed,
``closed`` (``joined`` or ``expired``) with everything else gone; a sorted set ``due`` holds the
pending ids scored by their expiry deadline. (``served``, not ``prediction``: the layout before
predictions carried their features stored ``features`` and ``prediction`` apart, and a hash left by
it reads as an event without a prediction, so its label waits and ends counted, where a prediction
without features could not be joined.) Each operation is a Lua script that reads and writes a whole
batch of events server-side, so a handler pays one round trip per batch and one command per shard,
not several per event.

Keys carry a hash tag per shard (``eddy:{<namespace>:<shard>}:...``, the shard from the event
id): one script call touches the keys of one shard only, all of them declared, so the scripts
run on Redis Cluster too, and more shards spread the state over more slots. Each shard costs a
script call per batch, so one Redis wants one shard (``EDDY_LABELING__REDIS_SHARDS``); changing
the number strands the pending state of a deployment.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple

import hiredis
import redis
from redis.exceptions import NoScriptError, ResponseError

_FIELDS = ("closed", "served", "tasked", "label")
_WIDTH = len(_FIELDS)

# Every script: KEYS[1] is the shard's due set, KEYS[2..] the events' hashes; replies are flat,
# ``_WIDTH`` values per event in the order of ``_FIELDS`` (Lua false becomes a nil reply). Each
# Redis command a script calls costs far more than its own work, so the due set is written with
# one command per script call, and what the caller sent is not sent back.

#: The Lua helpers every script starts with: the due set written in chunks (Lua's stack is small).
_HELPERS = """
local function due_add(deadlines)
  for k = 1, #deadlines, 2000 do
    redis.call('ZADD', KEYS[1], 'NX', unpack(deadlines, k, math.min(k + 1999, #deadlines)))
  end
end
local function due_remove(ids)
  for k = 1, #ids, 1000 do
    redis.call('ZREM', KEYS[1], unpack(ids, k, math.min(k + 999, #ids)))
  end
end
"""

#: ARGV: the deadline, the marker TTL (ms), then each event's id and prediction. A closed event is
#: left as it is; the prediction written replies nil.
_ADD = (
    _HELPERS
    + """
local deadline, ttl = ARGV[1], ARGV[2]
local out, deadlines = {}, {}
for i = 2, #KEYS do
  local key = KEYS[i]
  local s = redis.call('HMGET', key, 'closed', 'served', 'tasked', 'label')
  if not s[1] then
    redis.call('HSET', key, 'served', ARGV[2 * i])
    if not (s[2] or s[4]) then  -- a new event: its safety TTL and its deadline
      redis.call('PEXPIRE', key, ttl)
      deadlines[#deadlines + 1] = deadline
      deadlines[#deadlines + 1] = ARGV[2 * i - 1]
    end
    s[2] = false
  end
  for k = 1, 4 do out[#out + 1] = s[k] end
end
due_add(deadlines)
return out
"""
)

#: ARGV: the deadline, the marker TTL (ms), then each event's id and label. Replies with the state
#: before; the label is parked only where the event is open, without a prediction and without
#: one, so it is a new event then: its safety TTL and its deadline.
_PARK = (
    _HELPERS
    + """
local deadline, ttl = ARGV[1], ARGV[2]
local out, deadlines = {}, {}
for i = 2, #KEYS do
  local key = KEYS[i]
  local s = redis.call('HMGET', key, 'closed', 'served', 'tasked', 'label')
  if not (s[1] or s[2] or s[4]) then
    redis.call('HSET', key, 'label', ARGV[2 * i])
    redis.call('PEXPIRE', key, ttl)
    deadlines[#deadlines + 1] = deadline
    deadlines[#deadlines + 1] = ARGV[2 * i - 1]
  end
  for k = 1, 4 do out[#out + 1] = s[k] end
end
due_add(deadlines)
return out
"""
)

#: ARGV: the marker TTL (ms), how many events (first) were joined, then the joined events' ids.
#: Joined events are closed, keeping the hash's TTL (at least 9 x the pending time is left, the
#: join having come within it); the rest are marked tasked if they are still open.
_SETTLE = (
    _HELPERS
    + """
local ttl, joined = ARGV[1], tonumber(ARGV[2])
for i = 2, #KEYS do
  local key = KEYS[i]
  if i - 1 <= joined then
    redis.call('HSET', key, 'closed', 'joined')
    if redis.call('HDEL', key, 'served', 'tasked', 'label') == 0 then
      redis.call('PEXPIRE', key, ttl)  -- the hash was gone: never a marker without a TTL
    end
  elseif redis.call('EXISTS', key) == 1 and redis.call('HEXISTS', key, 'closed') == 0 then
    redis.call('HSET', key, 'tasked', '1')
  end
end
local ids = {}
for k = 1, joined do ids[k] = ARGV[k + 2] end
due_remove(ids)
return 0
"""
)

#: ARGV: the marker TTL (ms), then the events' ids. An event is closed (and its state replied)
#: only by the call that removed it from the due set; the others reply ``taken``.
_EXPIRE = """
local ttl = ARGV[1]
local out = {}
for i = 2, #KEYS do
  local key = KEYS[i]
  local s = {'taken', false, false, false}
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    s = redis.call('HMGET', key, 'closed', 'served', 'tasked', 'label')
    s[1] = false
    redis.call('DEL', key)
    redis.call('HSET', key, 'closed', 'expired')
    redis.call('PEXPIRE', key, ttl)
  end
  for k = 1, 4 do out[#out + 1] = s[k] end
end
return out
"""

_SHA = {
    script: hashlib.sha1(script.encode()).hexdigest() for script in (_ADD, _PARK, _SETTLE, _EXPIRE)
}


class PendingEvent(NamedTuple):
    """What the store holds for one event id: raw JSON as it was stored, markers as flags.

    A tuple, not a dataclass: one is built per event of every batch.
    """

    prediction: bytes | None = None
    early_label: bytes | None = None
    tasked: bool = False
    labeled: bool = False
    expired: bool = False


class _Call(NamedTuple):
    """One script call: the script, its keys, its arguments."""

    script: str
    keys: list[str]
    args: list[Any]


class _Plan(NamedTuple):
    """The calls of one operation, the event ids each call's reply is about, what they sent.

    ``stores_served``: the calls store each open event's prediction (``items``), which the
    reply leaves out.
    """

    calls: list[_Call]
    event_ids: list[list[str]]
    items: Mapping[str, bytes]
    stores_served: bool


#: The name of the store's own connection (``CLIENT LIST``).
CHANNEL_NAME = "eddy-labeling-exchange"


class _Ticket:
    """A request sent on the store's own connection; its replies are read when asked for."""

    def __init__(self, calls: list[_Call]) -> None:
        self.calls = calls
        self.replies: list[Any] | None = None
        self.error: BaseException | None = None


class _Channel:
    """A connection whose requests are sent at once and whose replies are read later, in order.

    The caller works while Redis does; a reply asked for reads every earlier one first. Health
    checks are off on it: their PING would read a reply meant for a request. Its scripts are
    loaded whenever it connects: a call the server answers with NOSCRIPT runs again only when
    its reply is read, after calls sent later (only if the server forgot them in between).
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        # a redis-py Connection, whose methods carry no annotations mypy could check
        self.connection: Any = None
        self.unread: deque[_Ticket] = deque()

    def send(self, calls: list[_Call]) -> _Ticket:
        if self.connection is None:
            self.connection = self.client.connection_pool.get_connection()
            self._load_scripts(self.connection)
            self.connection.register_connect_callback(self._load_scripts)
        ticket = _Ticket(calls)
        if calls:
            # packed by hiredis itself: redis-py's packing looks at every argument in Python
            packed = [
                hiredis.pack_command(("EVALSHA", _SHA[c.script], len(c.keys), *c.keys, *c.args))
                for c in calls
            ]
            try:
                self.connection.send_packed_command(packed, check_health=False)
            except (redis.ConnectionError, redis.TimeoutError) as error:
                self._broken()
                ticket.error = error  # its reader runs the calls again (PendingStore._received)
                return ticket
            except BaseException:
                self._broken()
                raise
            self.unread.append(ticket)
        else:
            ticket.replies = []
        return ticket

    def _load_scripts(self, connection: Any) -> None:
        """Name the connection (``CLIENT LIST`` shows it) and load every script on it."""
        connection.send_command("CLIENT", "SETNAME", CHANNEL_NAME, check_health=False)
        connection.read_response()
        for script in _SHA:
            connection.send_command("SCRIPT", "LOAD", script, check_health=False)
            connection.read_response()

    def receive(self, ticket: _Ticket) -> list[Any]:
        """The ticket's replies (an error reply as its exception), reading earlier ones first."""
        while ticket.replies is None and ticket.error is None:
            oldest = self.unread.popleft()
            replies = []
            try:
                for _call in oldest.calls:
                    try:
                        replies.append(self.connection.read_response())
                    except ResponseError as error:
                        replies.append(error)
            except BaseException as error:
                oldest.error = error
                self._broken()
                raise
            oldest.replies = replies
        if ticket.error is not None:
            raise ticket.error
        assert ticket.replies is not None
        return ticket.replies

    def _broken(self) -> None:
        """Drop the connection: the replies still due on it can no longer be told apart."""
        for ticket in self.unread:
            ticket.error = redis.ConnectionError("the connection broke before this reply")
        self.unread.clear()
        if self.connection is not None:
            self.connection.disconnect()


class SentExchange:
    """An exchange on its way to Redis: ``result`` waits for its replies."""

    def __init__(self, store: PendingStore, plans: list[_Plan], ticket: _Ticket) -> None:
        self.store, self.plans, self.ticket = store, plans, ticket

    def result(self) -> tuple[dict[str, PendingEvent], dict[str, PendingEvent]]:
        """What ``exchange`` returns: the states after the predictions, before the labels."""
        predicted, parked = self.store._states(self.plans, self.store._received(self.ticket))
        return predicted, parked


def _event(values: Sequence[Any]) -> PendingEvent:
    closed, prediction, tasked, label = values
    return PendingEvent(
        prediction, label, tasked is not None, closed == b"joined", closed == b"expired"
    )


class PendingStore:
    """Pending predictions, early labels, and the markers that make replays harmless.

    The sorted sets decide expiry (the sweep); the Redis TTLs on the hashes are only a safety net
    for a deployment that stopped sweeping, so they are the markers' longer TTL: a shorter one
    could delete an item before the sweep counted it.
    """

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        pending_ttl_s: float,
        clock: Callable[[], float] = time.time,
        shards: int = 1,
    ) -> None:
        self.client = client
        self.shards = shards
        self.prefixes = [f"eddy:{{{namespace}:{shard}}}:" for shard in range(shards)]
        self.due_keys = [prefix + "due" for prefix in self.prefixes]
        self.pending_ttl_s = pending_ttl_s
        self.marker_ttl_ms = max(1, round(pending_ttl_s * 10_000))  # 10 x the pending time
        self.clock = clock
        self._channel = _Channel(client)

    def shard_of(self, event_id: str) -> int:
        """The shard an event's state lives in."""
        return zlib.crc32(event_id.encode()) % self.shards if self.shards > 1 else 0

    def _by_shard(self, event_ids: Collection[str]) -> dict[int, list[str]]:
        if self.shards == 1:
            return {0: list(event_ids)} if event_ids else {}
        shards: dict[int, list[str]] = defaultdict(list)
        for event_id in event_ids:
            shards[self.shard_of(event_id)].append(event_id)
        return shards

    def _keys(self, shard: int, event_ids: list[str]) -> list[str]:
        prefix = self.prefixes[shard] + "event:"
        return [self.due_keys[shard], *(prefix + i for i in event_ids)]

    def _run(self, calls: Sequence[_Call]) -> list[Any]:
        """Each call's reply; all calls go in one round trip, and run in their order.

        A server that does not know a script yet (first use, restart, fail-over) gets it with
        that call again: a call that failed with NOSCRIPT did nothing, so repeating it is safe.
        Each script is atomic, so a repeated call running after later ones is only another order
        of the same calls, as two batches of one instance (or two instances) may run them.
        """
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(_SHA[call.script], len(call.keys), *call.keys, *call.args)
        return self._resolved(calls, pipe.execute(raise_on_error=False))

    def _received(self, ticket: _Ticket) -> list[Any]:
        """The replies of a request sent on the store's own connection, as ``_resolved``.

        If the connection broke before every reply was read (Redis restarted, a network
        blip), the calls run again through the client, which waits for Redis to come back: a
        call that had run already runs twice, which is what a replay after a crash does too,
        and the scripts are written for it.
        """
        try:
            replies = self._channel.receive(ticket)
        except (redis.ConnectionError, redis.TimeoutError):
            return self._run(ticket.calls)
        return self._resolved(ticket.calls, replies)

    def _resolved(self, calls: Sequence[_Call], replies: list[Any]) -> list[Any]:
        """The replies, with each call the server did not know the script of run again."""
        for k, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                script, keys, args = calls[k]
                replies[k] = self.client.eval(script, len(keys), *keys, *args)
            elif isinstance(reply, Exception):
                raise reply
        return replies

    def _plan(
        self, script: str, head: list[Any], items: Mapping[str, bytes], stores_served: bool
    ) -> _Plan:
        """The calls that run ``script`` on each shard's share of ``items``.

        Each call's arguments are ``head``, then id, value pairs. Where the script stores them as
        ``served``, an open event's prediction is not sent back: its state is given the one sent.
        """
        shards = self._by_shard(items)
        calls = []
        for shard, event_ids in shards.items():
            args = list(head)
            for event_id in event_ids:
                args += (event_id, items[event_id])
            calls.append(_Call(script, self._keys(shard, event_ids), args))
        return _Plan(calls, list(shards.values()), items, stores_served)

    def _execute(self, plans: Sequence[_Plan]) -> list[dict[str, PendingEvent]]:
        """Run the plans' calls in one round trip; each plan's events' states as replied."""
        return self._states(plans, self._run([call for plan in plans for call in plan.calls]))

    def _states(
        self, plans: Sequence[_Plan], all_replies: list[Any]
    ) -> list[dict[str, PendingEvent]]:
        """Each plan's events' states, from the replies of all the plans' calls in order."""
        replies = iter(all_replies)
        results = []
        for plan in plans:
            states: dict[str, PendingEvent] = {}
            for event_ids in plan.event_ids:
                reply = next(replies)
                if len(reply) != _WIDTH * len(event_ids):  # else events would go unnoticed
                    raise redis.ResponseError(
                        f"a labeling script replied {len(reply)} values for "
                        f"{len(event_ids)} events, not {_WIDTH} each"
                    )
                values = iter(reply)
                rows = zip(event_ids, values, values, values, values, strict=False)
                # one event's fields, spelled out: this runs for every event of every batch
                for event_id, closed, served, tasked, label in rows:
                    if closed is None and plan.stores_served:
                        served = plan.items[event_id]
                    states[event_id] = PendingEvent(
                        served, label, tasked is not None, closed == b"joined", closed == b"expired"
                    )
            results.append(states)
        return results

    def lookup(self, event_ids: Collection[str]) -> dict[str, PendingEvent]:
        """Everything stored about each id, markers included."""
        pipe = self.client.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.hmget(self.prefixes[self.shard_of(event_id)] + "event:" + event_id, _FIELDS)
        return {i: _event(values) for i, values in zip(event_ids, pipe.execute(), strict=True)}

    def add_predictions(self, predictions: Mapping[str, bytes]) -> dict[str, PendingEvent]:
        """Store Prediction JSON by id unless its event is closed; each event's state after."""
        return self._execute([self._add(predictions)])[0]

    def park_labels(self, labels: Mapping[str, bytes]) -> dict[str, PendingEvent]:
        """Park Label JSON by id where it must wait; returns what each event had before.

        A label is parked only if its event is open, has no prediction yet and no parked label
        (the first label wins); a label whose prediction is here is joined by the caller, and
        parked nowhere, so that a crash before the join is acknowledged loses nothing.
        """
        return self._execute([self._park(labels)])[0]

    def exchange(
        self, predictions: Mapping[str, bytes], labels: Mapping[str, bytes]
    ) -> tuple[dict[str, PendingEvent], dict[str, PendingEvent]]:
        """``add_predictions`` and ``park_labels``, in one round trip.

        The calls run in this order, each atomic, as the two would one after the other: the
        handler waits for Redis once per batch instead of once per topic.
        """
        return self.send_exchange(predictions, labels).result()

    def send_exchange(
        self, predictions: Mapping[str, bytes], labels: Mapping[str, bytes]
    ) -> SentExchange:
        """``exchange``, sent now on the store's own connection; its result is read later.

        Exchanges run in the order they were sent. The caller decodes its next batch meanwhile.
        """
        plans = [self._add(predictions), self._park(labels)]
        ticket = self._channel.send([call for plan in plans for call in plan.calls])
        return SentExchange(self, plans, ticket)

    def _add(self, predictions: Mapping[str, bytes]) -> _Plan:
        """Write the prediction of each open event and read all of it, in one step on the server.

        The write and the read are atomic, so of a label parked by one instance and a prediction
        stored by another, the later sees the other: an example may come twice (consumers
        de-duplicate) but is never lost. Rewriting the same prediction is harmless, and ``NX``
        keeps the first deadline on replays.
        """
        deadline = self.clock() + self.pending_ttl_s
        head = [deadline, self.marker_ttl_ms]
        return self._plan(_ADD, head, predictions, stores_served=True)

    def _park(self, labels: Mapping[str, bytes]) -> _Plan:
        deadline = self.clock() + self.pending_ttl_s
        return self._plan(_PARK, [deadline, self.marker_ttl_ms], labels, stores_served=False)

    def settle(self, joined: Collection[str], tasked: Collection[str]) -> None:
        """Record what an acknowledged batch decided.

        Joined events are closed: their state goes, a marker turns later labels into duplicates.
        Tasked events that are still open are remembered as asked.
        """
        self.send_settle(joined, tasked)()

    def send_settle(self, joined: Collection[str], tasked: Collection[str]) -> Callable[[], None]:
        """``settle``, sent now on the store's own connection; call what it returns to wait.

        It runs after every exchange sent before it and before every one sent after it.
        """
        ticket = self._channel.send(self._settle_calls(joined, tasked))

        def wait() -> None:
            self._received(ticket)

        return wait

    def _settle_calls(self, joined: Collection[str], tasked: Collection[str]) -> list[_Call]:
        calls = []
        joined_by_shard, tasked_by_shard = self._by_shard(joined), self._by_shard(tasked)
        for shard in joined_by_shard.keys() | tasked_by_shard.keys():
            done, asked = joined_by_shard.get(shard, []), tasked_by_shard.get(shard, [])
            keys = self._keys(shard, done + asked)
            calls.append(_Call(_SETTLE, keys, [self.marker_ttl_ms, len(done), *done]))
        return calls

    def pop_expired(self, limit: int) -> dict[str, PendingEvent]:
        """Close up to ``limit`` events whose deadline passed, earliest first; what each held.

        Each id is claimed by removing it from its due set, so of several instances sweeping at
        once exactly one counts it.
        """
        pipe = self.client.pipeline(transaction=False)
        for due_key in self.due_keys:
            pipe.zrangebyscore(due_key, "-inf", self.clock(), start=0, num=limit, withscores=True)
        due = sorted((score, raw.decode()) for found in pipe.execute() for raw, score in found)[
            :limit
        ]
        if not due:
            return {}
        shards = self._by_shard([event_id for _score, event_id in due])
        calls = [
            _Call(_EXPIRE, self._keys(shard, event_ids), [self.marker_ttl_ms, *event_ids])
            for shard, event_ids in shards.items()
        ]
        expired: dict[str, PendingEvent] = {}
        for event_ids, reply in zip(shards.values(), self._run(calls), strict=True):
            for k, event_id in enumerate(event_ids):
                values = reply[k * _WIDTH : (k + 1) * _WIDTH]
                if values[0] is None:  # claimed by this call
                    expired[event_id] = _event(values)
        return expired
