"""A person's answer is typed like the model's guess, or refused with a reason."""

from __future__ import annotations

import pytest

from schemas import LabelingTask
from services.core.target import TargetSpec
from services.labeling.ui import parse_answer, render


@pytest.mark.parametrize(
    ("text", "guess", "expected"),
    [
        ("true", False, True),
        ("No", True, False),
        (" 3 ", 1, 3),
        ("2.5", 0.1, 2.5),
        ("cat", "dog", "cat"),
    ],
)
def test_answers_take_the_type_of_the_guess(text: str, guess: object, expected: object) -> None:
    assert parse_answer(text, guess) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "guess"), [("maybe", True), ("three", 1), ("", "dog"), ("x" * 201, "dog")]
)
def test_answers_that_do_not_fit_are_refused(text: str, guess: object) -> None:
    with pytest.raises(ValueError):
        parse_answer(text, guess)  # type: ignore[arg-type]


def test_the_page_escapes_what_it_shows_even_an_id_the_payloads_would_refuse() -> None:
    task = LabelingTask.model_construct(  # markup in an id: refused on the wire, escaped here
        event_id="<script>",
        entity_id="e",
        features={"<b>": "<i>"},
        prediction="<x>",
        uncertainty=0.5,
        model_version=1,
    )
    page = render([task])
    assert "<script>" not in page and "&lt;script&gt;" in page and "<b>" not in page


def test_an_answer_must_fit_the_deployments_target() -> None:
    updown = TargetSpec(classes=["DOWN", "UP"])
    assert parse_answer(" UP ", "DOWN", updown) == "UP"
    with pytest.raises(ValueError, match="not one of"):
        parse_answer("SIDEWAYS", "DOWN", updown)


def test_the_page_offers_a_button_per_declared_class() -> None:
    task = LabelingTask(
        event_id="e1", entity_id="e", features={}, prediction="UP", uncertainty=0.5, model_version=1
    )
    page = render([task], target=TargetSpec(type="multiclass", classes=["cat", "dog", "<owl>"]))
    assert all(f'value="{c}"' in page for c in ("cat", "dog", "&lt;owl&gt;"))
