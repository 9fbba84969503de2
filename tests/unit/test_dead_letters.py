"""Dead letters and the stream loop's pure helpers: reason codes, descriptions, queued effects."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import pytest
from pydantic import ValidationError

from schemas import DeadLetter, Label, ModelVersion, Payload, RawEvent
from services.core.stream import (
    DLQ_ORIGINAL_LIMIT,
    Effects,
    Outbound,
    RejectLog,
    dead_letter,
    decode,
    decode_batch,
    describe,
    validation_reason,
)


@dataclass
class FakeMessage:
    """Stands in for a consumed confluent_kafka Message: the same accessors, fixed answers."""

    payload: bytes | None
    key_bytes: bytes | None = b"page-42"
    topic_name: str | None = "events.raw"
    partition_number: int | None = 2
    offset_number: int | None = 1234

    def value(self) -> bytes | None:
        return self.payload

    def key(self) -> bytes | None:
        return self.key_bytes

    def topic(self) -> str | None:
        return self.topic_name

    def partition(self) -> int | None:
        return self.partition_number

    def offset(self) -> int | None:
        return self.offset_number


def validation_error(model: type[Payload], raw: bytes) -> ValidationError:
    with pytest.raises(ValidationError) as raised:
        model.model_validate_json(raw)
    return raised.value


# dead_letter


def test_dead_letter_carries_reason_source_and_original_bytes() -> None:
    message = FakeMessage(b'{"event_id": 1}')

    letter = dead_letter(message, "ingest", "wrong_type", "event_id: not a string", "evt-7")

    assert letter.reason == "wrong_type"
    assert letter.detail == "event_id: not a string"
    assert letter.service == "ingest"
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "events.raw",
        2,
        1234,
    )
    assert base64.b64decode(letter.original) == b'{"event_id": 1}'
    assert letter.original_size == 15
    assert letter.original_truncated is False
    assert letter.event_id == "evt-7"
    assert base64.b64decode(letter.original_key or "") == b"page-42"  # a replay sends it again


def test_dead_letter_keeps_non_utf8_bytes_exactly() -> None:
    original = bytes(range(256))

    letter = dead_letter(FakeMessage(original), "ingest", "not_utf8", "byte 128")

    assert base64.b64decode(letter.original) == original


def test_dead_letter_of_an_empty_message_has_an_empty_original() -> None:
    letter = dead_letter(FakeMessage(None), "ingest", "invalid_json", "empty")

    assert letter.original == ""
    assert letter.original_size == 0
    assert letter.original_truncated is False


def test_dead_letter_exactly_at_the_limit_is_kept_whole() -> None:
    original = b"x" * DLQ_ORIGINAL_LIMIT

    letter = dead_letter(FakeMessage(original), "ingest", "oversized", "too big")

    assert base64.b64decode(letter.original) == original
    assert letter.original_truncated is False


def test_dead_letter_over_the_limit_is_truncated_and_says_so() -> None:
    original = b"a" * DLQ_ORIGINAL_LIMIT + b"b" * 5000

    letter = dead_letter(FakeMessage(original), "ingest", "oversized", "too big")

    assert base64.b64decode(letter.original) == original[:DLQ_ORIGINAL_LIMIT]
    assert letter.original_size == len(original)
    assert letter.original_truncated is True


def test_dead_letter_detail_is_cut_to_what_the_schema_allows() -> None:
    letter = dead_letter(FakeMessage(b"{}"), "ingest", "invalid_value", "why " * 1000)

    assert len(letter.detail) == 2000


def test_dead_letter_without_source_coordinates_still_validates() -> None:
    message = FakeMessage(b"{}", topic_name=None, partition_number=None, offset_number=None)

    letter = dead_letter(message, "serving", "handler_error", "boom")

    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("", 0, 0)


def test_dead_letter_round_trips_through_json() -> None:
    letter = dead_letter(FakeMessage(b"\x00\xff" * 10_000), "ingest", "not_utf8", "byte 1")

    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter


# validation_reason and describe


@pytest.mark.parametrize(
    ("model", "raw", "reason"),
    [
        pytest.param(RawEvent, b"{", "invalid_json", id="truncated-json"),
        pytest.param(RawEvent, b"", "invalid_json", id="empty"),
        pytest.param(RawEvent, b"{}", "missing_field", id="missing"),
        pytest.param(Label, b'{"event_id":"e","label":1,"x":2}', "unknown_field", id="extra"),
        pytest.param(RawEvent, b"[]", "wrong_type", id="not-an-object"),
        pytest.param(Label, b'{"event_id":5,"label":1}', "wrong_type", id="int-for-string"),
        pytest.param(Label, b'{"event_id":"e","label":1,"ts":"soon"}', "wrong_type", id="bad-ts"),
        pytest.param(
            Label, b'{"event_id":"' + b"e" * 201 + b'","label":1}', "out_of_range", id="too-long"
        ),
        pytest.param(Label, b'{"event_id":"","label":1}', "out_of_range", id="too-short"),
        pytest.param(
            Label, b'{"event_id":"e","label":1,"schema_version":0}', "out_of_range", id="too-low"
        ),
        pytest.param(Label, b'{"event_id":"a b","label":1}', "invalid_value", id="pattern"),
        pytest.param(
            DeadLetter,
            b'{"reason":"bored","detail":"","service":"s","source_topic":"t",'
            b'"source_partition":0,"source_offset":0,"original":"","original_size":0}',
            "invalid_value",
            id="not-a-literal",
        ),
    ],
)
def test_validation_reason_names_the_first_problem(
    model: type[Payload], raw: bytes, reason: str
) -> None:
    assert validation_reason(validation_error(model, raw)) == reason


def test_describe_names_each_field_with_its_problem() -> None:
    error = validation_error(Label, b'{"event_id":"a b","label":[1]}')

    text = describe(error)

    assert text.startswith("event_id: String should match pattern")
    assert "; label" in text


def test_describe_names_nested_fields_by_their_path() -> None:
    with pytest.raises(ValidationError) as raised:
        ModelVersion.model_validate(
            {
                "model_name": "m",
                "version": 1,
                "flavour": "river",
                "artifact_uri": "file:///a",
                "sha256": "0" * 64,
                "key_id": "hmac:0000000000000000",
                "signature": "0" * 64,
                "trigger": "manual",
                "lineage": [{"topic": "t", "partition": -1, "first": 0, "last": 0}],
            }
        )

    assert describe(raised.value).startswith("lineage.0.partition:")


def test_describe_calls_a_whole_message_problem_the_message() -> None:
    assert describe(validation_error(RawEvent, b"[]")) == "(message): Input should be an object"


def test_describe_lists_at_most_five_problems() -> None:
    error = validation_error(DeadLetter, b"{}")
    assert len(error.errors()) > 5

    assert describe(error).count("; ") == 4


# Effects


def label(event_id: str = "evt-1") -> Label:
    return Label(event_id=event_id, label=True)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        pytest.param("page-42", b"page-42", id="str-key"),
        pytest.param(b"\x00raw", b"\x00raw", id="bytes-key"),
        pytest.param(None, None, id="no-key"),
    ],
)
def test_emit_queues_the_payload_as_json_with_its_key(
    key: str | bytes | None, expected: bytes | None
) -> None:
    effects = Effects()
    payload = label()

    effects.emit("labels", key, payload)

    assert effects.outputs == [Outbound("labels", expected, payload.model_dump_json().encode())]
    assert Label.model_validate_json(effects.outputs[0].value) == payload


def test_emit_keeps_the_order_of_outputs() -> None:
    effects = Effects()
    for i in range(3):
        effects.emit("labels", None, label(f"evt-{i}"))

    ids = [Label.model_validate_json(out.value).event_id for out in effects.outputs]

    assert ids == ["evt-0", "evt-1", "evt-2"]


def test_extend_appends_outputs_and_after_ack_and_before_commit_effects_in_order() -> None:
    first, second = Effects(), Effects()
    first.emit("a", None, label("evt-a"))
    second.emit("b", None, label("evt-b"))
    calls: list[str] = []
    first.after_ack.append(lambda: calls.append("first"))
    second.after_ack.append(lambda: calls.append("second"))
    first.before_commit.append(lambda: calls.append("first waited"))
    second.before_commit.append(lambda: calls.append("second waited"))

    first.extend(second)
    for effect in [*first.after_ack, *first.before_commit]:
        effect()

    assert [out.topic for out in first.outputs] == ["a", "b"]
    assert calls == ["first", "second", "first waited", "second waited"]


# decode_batch


def test_decode_batch_keeps_each_valid_message_with_its_bytes_and_dead_letters_the_rest() -> None:
    good = [label("evt-1").model_dump_json().encode(), label("evt-2").model_dump_json().encode()]
    bad = [b"{not json", b'{"event_id": "evt-3"}', None]
    messages = [FakeMessage(good[0]), *(FakeMessage(raw) for raw in bad), FakeMessage(good[1])]
    effects = Effects()

    valid = decode_batch(messages, Label, "labeling", "dlq", effects)  # type: ignore[arg-type]

    assert [(item.event_id, raw) for item, raw in valid] == [("evt-1", good[0]), ("evt-2", good[1])]
    letters = [DeadLetter.model_validate_json(out.value) for out in effects.outputs]
    assert [out.topic for out in effects.outputs] == ["dlq"] * 3
    reasons = [letter.reason for letter in letters]
    assert reasons == ["invalid_json", "missing_field", "invalid_json"]


def test_decode_batch_dead_letters_exactly_as_decode_does_one_message() -> None:
    raw = b'{"event_id": "evt-1", "label": true, "surprise": 1}'
    one, batch = Effects(), Effects()

    decode(FakeMessage(raw), Label, "labeling", "dlq", one)  # type: ignore[arg-type]
    decode_batch([FakeMessage(raw)], Label, "labeling", "dlq", batch)  # type: ignore[list-item]

    def letters(effects: Effects) -> list[dict[str, object]]:
        return [
            DeadLetter.model_validate_json(out.value).model_dump(exclude={"failed_at"})
            for out in effects.outputs
        ]

    assert [out.key for out in batch.outputs] == [out.key for out in one.outputs]
    assert letters(batch) == letters(one) != []


# the reject log


def test_rejects_are_logged_once_per_reason_per_interval_with_the_count_since_the_last_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    rejects = RejectLog(every_s=10, clock=lambda: now[0])
    logged = [rejects.note("ingest", "wrong_type", "x: not a number", None) for _ in range(500)]
    logged.append(rejects.note("ingest", "oversized", "70000 bytes", None))
    now[0] = 10.0
    logged.append(rejects.note("ingest", "wrong_type", "y: not a number", "ev-9"))

    assert logged.count(True) == 3  # the first of each reason, then the next after 10 s
    last = caplog.records[-1]
    assert (last.reason, last.count, last.event_id) == ("wrong_type", 500, "ev-9")  # type: ignore[attr-defined]


@pytest.mark.parametrize("event_id", ["<script>alert(1)</script>", "a b", 'a"b', "é", "x" * 201])
def test_an_event_id_with_markup_quotes_spaces_or_too_long_is_refused(event_id: str) -> None:
    with pytest.raises(ValidationError):
        RawEvent.model_validate({"event_id": event_id, "entity_id": "e", "ts": 1, "features": {}})


@pytest.mark.parametrize("event_id", ["ev-1", "user:42", "a@b.example", "01J9ZQ/x#1", "a+b=c~d_e"])
def test_ids_in_the_documented_character_set_are_taken(event_id: str) -> None:
    RawEvent.model_validate({"event_id": event_id, "entity_id": "e", "ts": 1, "features": {}})
