"""Who may sign in to the label page, and how fast anyone may answer."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from services.core.exceptions import ConfigurationError
from services.labeling.labellers import (
    Labellers,
    RateLimit,
    add_to_file,
    hash_password,
    verify_password,
)


def test_a_password_matches_its_hash_and_nothing_else() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsE", stored)
    assert hash_password("correct horse") != stored, "each hash has its own salt"


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain",
        "bcrypt$1$2$3$4$5",
        "scrypt$x$8$1$AA==$AA==",
        "scrypt$16$8$1$!!$AA==",
        "scrypt$1099511627776$8$1$AA==$AA==",
        "scrypt$16384$8$1$AA==$AA==$extra",
    ],
    ids=["empty", "plain", "other kind", "n not a number", "bad base64", "huge n", "extra part"],
)
def test_a_malformed_hash_never_matches_and_never_raises(stored: str) -> None:
    assert not verify_password("", stored) and not verify_password("x", stored)


def test_the_users_file_is_written_private_and_a_name_added_twice_is_replaced(
    tmp_path: Path,
) -> None:
    path = tmp_path / "labellers"
    assert add_to_file(path, "ann", "first") is False
    assert add_to_file(path, "bob", "second") is False
    assert add_to_file(path, "ann", "third") is True

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    people = Labellers.load(path, {})
    assert sorted(people.hashes) == ["ann", "bob"]
    assert people.check("ann", "third") and not people.check("ann", "first")
    assert people.check("bob", "second") and not people.check("nobody", "second")


def test_inline_users_join_the_file_and_bad_lines_say_where_they_are(tmp_path: Path) -> None:
    path = tmp_path / "labellers"
    path.write_text("# people\n\nann:" + hash_password("pw") + "\n")
    both = Labellers.load(path, {"cy": hash_password("cy's")})
    assert both.check("ann", "pw") and both.check("cy", "cy's")

    path.write_text("ann:" + hash_password("pw") + "\nbob plain-password\n")
    with pytest.raises(ConfigurationError, match=r"labellers:2: expected `name:scrypt\$"):
        Labellers.load(path, {})
    with pytest.raises(ConfigurationError, match="eddy labellers add NAME"):
        Labellers.load(tmp_path / "missing", {})


@pytest.mark.parametrize("name", ["", "a b", "<script>", "x" * 65, "ann\n"])
def test_names_that_would_not_be_safe_in_a_page_or_a_metric_are_refused(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        add_to_file(tmp_path / "labellers", name, "pw")
    with pytest.raises(ConfigurationError, match="letters, digits"):
        Labellers({name: "scrypt$"})


def test_the_rate_limit_allows_a_burst_then_says_how_long_to_wait() -> None:
    limit = RateLimit(per_minute=3)
    assert [limit.allow("ann") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limit.allow("ann")
    assert 0 < wait <= 20.0, "one answer comes back every 20 s"
    assert limit.allow("bob") == 0.0, "each person has their own allowance"


def test_the_rate_limit_forgets_people_back_at_a_full_allowance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.labeling import labellers

    monkeypatch.setattr(labellers, "MAX_TRACKED", 10)
    limit = RateLimit(per_minute=600)
    for i in range(10):
        limit.allow(f"name-{i}")
    time_passes = limit._buckets["name-0"][1] - 1.0  # each of them a second ago: full again
    limit._buckets = {k: (t, time_passes) for k, (t, _) in limit._buckets.items()}

    limit.allow("one-more")
    limit.allow("and-another")

    assert len(limit._buckets) <= 2
