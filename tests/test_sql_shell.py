"""The interactive ``sql`` prompt, driven through prompt_toolkit's own pipe input."""

from __future__ import annotations

from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from exporter.sql_shell import shell


def test_each_line_is_answered_kept_in_history_and_ctrl_d_ends(tmp_path: Path) -> None:
    shown: list[str] = []
    asked: list[str] = []

    def answer(text: str) -> str:
        asked.append(text)
        return f"answer to {text}"

    history = tmp_path / "history"
    with create_pipe_input() as keys:
        keys.send_text("SELECT 1\r\r  \rSELECT count(*) FROM runs\r\x04")
        session: PromptSession[str] = PromptSession(
            input=keys, output=DummyOutput(), history=FileHistory(str(history))
        )
        shell(answer, shown.append, session)
    assert asked == ["SELECT 1", "SELECT count(*) FROM runs"], "blank lines are skipped"
    assert shown[1:] == ["answer to SELECT 1", "answer to SELECT count(*) FROM runs"]
    assert "SELECT count(*) FROM runs" in history.read_text()


def test_ctrl_c_drops_the_line_being_typed() -> None:
    asked: list[str] = []
    with create_pipe_input() as keys:
        keys.send_text("SELECT oops\x03SELECT 2\r\x04")
        session: PromptSession[str] = PromptSession(input=keys, output=DummyOutput())
        shell(lambda text: asked.append(text) or "", lambda _: None, session)
    assert asked == ["SELECT 2"]
