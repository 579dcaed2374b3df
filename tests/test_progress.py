"""Progress on stderr: a plain, throttled line in logs (stderr not a terminal), nothing when turned off,
and never on stdout (which carries --json)."""

from __future__ import annotations

import pytest

from vitc.core import progress as progress_mod
from vitc.core.progress import progress


def _count(n: int) -> None:
    with progress("train epoch 1/3", total=n) as bar:
        for _ in range(n):
            bar.advance()


def test_a_log_gets_plain_progress_lines(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("VITC_PROGRESS", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(progress_mod, "LINE_INTERVAL_S", 0.0)
    _count(4)
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith("train epoch 1/3: 1/4 (25%), ") and lines[0].endswith(" s")
    assert lines[-1].startswith("train epoch 1/3: 4/4 (100%), ")


def test_lines_are_throttled(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("VITC_PROGRESS", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(progress_mod, "LINE_INTERVAL_S", 3600.0)
    _count(1000)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("env", "rank"), [("0", "0"), (None, "1")])
def test_progress_off_and_on_other_ranks(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                         env: str | None, rank: str) -> None:
    if env is None:
        monkeypatch.delenv("VITC_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("VITC_PROGRESS", env)
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setattr(progress_mod, "LINE_INTERVAL_S", 0.0)
    _count(3)
    assert capsys.readouterr() == ("", "")
