"""``sql`` at a terminal with no query: a prompt with history and line editing (prompt_toolkit),
one query per line, until Ctrl-D. Each answer comes from the same path as a one-shot ``sql``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory

HISTORY = Path.home() / ".synthbrew_sql_history"


def shell(
    answer: Callable[[str], str],
    show: Callable[[str], object] = print,
    session: PromptSession[str] | None = None,
) -> None:
    """Ask, answer, repeat; Ctrl-C drops the line being typed, Ctrl-D ends."""
    session = session or PromptSession(history=FileHistory(str(HISTORY)))
    show("One SELECT per line over runs, sources, daily_usage (see docs/sql.md); Ctrl-D ends.")
    while True:
        try:
            text = session.prompt("sql> ")
        except KeyboardInterrupt:
            continue
        except EOFError:
            return
        if text.strip():
            show(answer(text))
