"""Shared test helpers: a quiet environment for subprocesses and a trained-free vit-nano artifact.

Keep this file small and fast; fixtures used by one test file live in that file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

VITC = [sys.executable, "-m", "vitc.cli"]


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for ``vitc`` subprocesses: one thread (the CI box has 2 shared cores), no progress bars."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "VITC_PROGRESS": "0", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def one_error_line(stderr: str) -> str:
    """The single ``error: ...`` line a failing command must print (no traceback); returns its text."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ") or ": error: " in ln]
    assert len(errors) == 1 and "Traceback" not in stderr, f"expected one error line, got:\n{stderr}"
    return errors[0]


@pytest.fixture(scope="session")
def nano_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained vit-nano artifact (seeded weights), written once per session."""
    import torch

    from vitc.artifacts import save_model
    from vitc.models.registry import resolve_model

    torch.manual_seed(0)
    model, spec = resolve_model("vit-nano")
    return save_model(tmp_path_factory.mktemp("nano") / "nano.safetensors", model, spec)
