"""The label page in a real headless Chromium: sign in, answer by keyboard, on a phone's screen.

Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright. Without it the test skips,
except under CI=true, where ``.ci/run`` installs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas import Label, LabelingTask
from services.core.settings import Settings
from services.labeling.labellers import add_to_file
from services.labeling.web import LabelServer
from tests.integration.support import OpenReader, produce

PHONE = {"width": 390, "height": 844}


@pytest.fixture
def page_url(settings: Settings, tmp_path: Path) -> Iterator[str]:
    users = tmp_path / "labellers"
    add_to_file(users, "ann", "ann's password")
    labeling = settings.labeling.model_copy(update={"ui_users_file": users})
    server = LabelServer(settings.model_copy(update={"labeling": labeling}), "127.0.0.1", 0)
    server.start()
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


def tasks(n: int) -> list[LabelingTask]:
    """Tasks the page shows most uncertain first: t0, t1, t2, ..."""
    return [
        LabelingTask(
            event_id=f"t{i}",
            entity_id=f"user-{i}",
            features={"amount": 10.0 * i, "country": "NO", "https": True},
            prediction=True,
            uncertainty=0.49 - i / 100,
            model_version=4,
        )
        for i in range(n)
    ]


def test_a_labeller_signs_in_and_answers_three_requests_by_keyboard(
    settings: Settings, page_url: str, browser: Any, reader: OpenReader
) -> None:
    produce(
        settings,
        "labeling_tasks",
        [(t.event_id.encode(), t.model_dump_json().encode()) for t in tasks(4)],
    )
    page = browser.new_page()
    page.goto(page_url)
    page.fill("input[name=name]", "ann")
    page.fill("input[name=password]", "ann's password")
    page.press("input[name=password]", "Enter")
    page.wait_for_selector("article.task[data-event=t3]", timeout=30_000)
    assert page.inner_text("#waiting") == "4 waiting"
    first = page.locator("article.task").first
    assert "guesses true" in first.inner_text() and "amount" in first.inner_text()

    for answer_key, event_id in (("1", "t0"), ("2", "t1"), ("1", "t2")):
        assert page.locator("article.task").first.get_attribute("data-event") == event_id
        with page.expect_navigation():
            page.keyboard.press(answer_key)
        assert page.locator(f"article.task[data-event={event_id}]").count() == 0

    assert page.inner_text("#answered") == "you answered 3"
    assert page.inner_text("#waiting") == "1 waiting"
    assert "t2 labelled true" in page.inner_text(".notice")
    labels = reader("labels", Label).read_until(lambda items: len(items) >= 3)
    assert [(lbl.event_id, lbl.label, lbl.labeller) for lbl in labels] == [
        ("t0", True, "ann"),
        ("t1", False, "ann"),
        ("t2", True, "ann"),
    ]


def test_the_page_fits_a_phone_screen(
    settings: Settings, page_url: str, browser: Any, artifacts: Path
) -> None:
    produce(
        settings,
        "labeling_tasks",
        [(t.event_id.encode(), t.model_dump_json().encode()) for t in tasks(2)],
    )
    page = browser.new_page(viewport=PHONE, is_mobile=True, has_touch=True)
    page.goto(page_url + "/signin")
    page.fill("input[name=name]", "ann")
    page.fill("input[name=password]", "ann's password")
    page.click("button:text('Sign in')")
    page.wait_for_selector("article.task[data-event=t1]", timeout=30_000)

    page.screenshot(path=str(artifacts / "label-page-phone.png"))
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    button = page.locator("article.task").first.locator("button").first.bounding_box()

    assert overflow <= 0, f"the page is {overflow}px wider than the phone"
    assert button is not None and button["height"] >= 40 and button["x"] + button["width"] <= 390
    with page.expect_navigation():
        page.locator("article.task").first.locator("button").first.tap()
    assert page.locator("article.task[data-event=t0]").count() == 0
