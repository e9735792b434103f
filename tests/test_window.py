from __future__ import annotations

from uuid import uuid4

from exporter.window import Window


def test_membership_and_unchanged_runs() -> None:
    a, b, stranger = uuid4(), uuid4(), uuid4()
    window = Window([(a, 1), (b, 2), (a, 1)])
    assert len(window) == 2, "a run listed twice is one run"
    assert window.has(a)
    assert window.has(b)
    assert not window.has(stranger)
    assert window.unchanged(a, 1)
    assert not window.unchanged(a, 2), "same run, other fingerprint: changed"
    assert not window.unchanged(stranger, 1)


def test_an_empty_window_knows_nothing() -> None:
    run = uuid4()
    assert len(Window()) == 0
    assert not Window().has(run)
    assert not Window().unchanged(run, 0)
