"""A person's answer is typed like the model's guess, or refused with a reason."""

from __future__ import annotations

import pytest

from schemas import LabelingTask
from services.core.target import TargetSpec
from services.labeling.board import parse_answer
from services.labeling.pages import View, board, signin


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
    page = board([task], View(labeller="<u>", csrf="'><x", waiting=1, answered=0), None)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<th>&lt;b&gt;</th><td>&lt;i&gt;</td>" in page and "<i>" not in page
    assert "<u>" not in page and "'><x" not in page


def test_an_answer_must_fit_the_deployments_target() -> None:
    updown = TargetSpec(classes=["DOWN", "UP"])
    assert parse_answer(" UP ", "DOWN", updown) == "UP"
    with pytest.raises(ValueError, match="not one of"):
        parse_answer("SIDEWAYS", "DOWN", updown)


def test_the_page_offers_a_button_per_declared_class() -> None:
    task = LabelingTask(
        event_id="e1", entity_id="e", features={}, prediction="UP", uncertainty=0.5, model_version=1
    )
    view = View(labeller="ann", csrf="t", waiting=1, answered=0)
    page = board([task], view, TargetSpec(type="multiclass", classes=["cat", "dog", "<owl>"]))
    assert all(
        f"value='{c}' data-key='{i}'" in page
        for i, c in enumerate(("cat", "dog", "&lt;owl&gt;"), 1)
    )


def test_only_the_first_request_answers_to_the_keyboard() -> None:
    tasks = [
        LabelingTask(
            event_id=f"e{i}",
            entity_id="e",
            features={},
            prediction=True,
            uncertainty=0.5,
            model_version=1,
        )
        for i in range(3)
    ]
    page = board(tasks, View(labeller="ann", csrf="t", waiting=3, answered=2), None)
    assert page.count("data-key='1'") == 1 and page.count("data-key='2'") == 1
    assert "3 waiting" in page and "you answered 2" in page


def test_every_form_carries_the_csrf_token_and_no_page_has_inline_script() -> None:
    task = LabelingTask(
        event_id="e1",
        entity_id="e",
        features={},
        prediction=True,
        uncertainty=0.5,
        model_version=1,
    )
    pages = [
        board([task], View(labeller="ann", csrf="tok", waiting=1, answered=0), None),
        signin("tok"),
    ]
    for page in pages:
        assert page.count("<form") == page.count("name='csrf' value='tok'")
        assert "<script src='/static/label.js' defer></script>" in page
        assert page.count("<script") == 1 and "style=" not in page
