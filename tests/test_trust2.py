"""Trust, second round: no command writes over one of its own inputs (under any spelling of the path), a
resumed run is the run it claims to be, teachers that do not fit, odd checkpoints and files, Ctrl-C at
start-up, and one-liners that name the right thing. Each case: the exit code, exactly one ``error:`` line,
nothing partial written, and the input file's SHA-256 unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from conftest import VITC, one_error_line, subprocess_env

from vitc.cli import cli
from vitc.core.artifacts import save_artifact, save_model
from vitc.core.fileio import file_sha256
from vitc.core.models import resolve_model


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


def fails(result: Any, code: int, message: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    line = one_error_line(result.stderr)
    assert message in line, line
    return line


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp"))


@pytest.fixture(scope="module")
def dvt_art(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vitc.methods.dynamicvit.compress import attach_predictors

    torch.manual_seed(0)
    model, spec = resolve_model("vit-nano")
    model, spec = attach_predictors(model, spec, 0.7, [1, 2, 3])
    path = tmp_path_factory.mktemp("dvt") / "compressed.safetensors"
    return save_artifact(path, spec, model.state_dict(), kind="dynamicvit", meta={"keep_ratio": 0.7})


# ---- 1. no command writes over its own input ---------------------------------------------------------------

SPELLINGS: dict[str, Callable[[Path], str]] = {
    "same": lambda p: p.name,
    "dot-slash": lambda p: f"./{p.name}",
    "absolute": lambda p: str(p.resolve()),
    "symlink": lambda p: (p.parent / f"link{p.suffix}").symlink_to(p.name) or f"link{p.suffix}",
    "hardlink": lambda p: os.link(p, p.parent / f"hard{p.suffix}") or f"hard{p.suffix}",
}


def _copy(src: str | Path, dst: Path) -> Path:
    dst.write_bytes(Path(src).read_bytes())
    return dst


def official_checkpoint(path: Path) -> Path:
    """A vit-nano DynamicViT state dict under the official key names (predictors as score_predictor.k)."""
    from vitc.core.token_select import TokenSelect
    from vitc.methods.dynamicvit.compress import attach_predictors

    torch.manual_seed(0)
    dense, spec = resolve_model("vit-nano")
    model, _ = attach_predictors(dense, spec, 0.7, [1, 2, 3])
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("blocks.")}
    block = stage = 0
    for module in model.blocks:
        if isinstance(module, TokenSelect):
            state.update({f"score_predictor.{stage}.{k}": v for k, v in module.predictor.state_dict().items()})
            stage += 1
        else:
            state.update({f"blocks.{block}.{k}": v for k, v in module.state_dict().items()})
            block += 1
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"model": state}, path)
    return path


@pytest.mark.parametrize("spelling", list(SPELLINGS))
@pytest.mark.parametrize("case", ["materialize", "import", "export", "quantize", "build", "bench"])
def test_a_file_output_never_writes_over_an_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dvt_art: Path,
                                                  nano_artifact: Path, dense: dict, case: str, spelling: str) -> None:
    monkeypatch.chdir(tmp_path)
    source = {"materialize": lambda: _copy(dvt_art, tmp_path / "m.safetensors"),
              "import": lambda: official_checkpoint(tmp_path / "official.safetensors"),
              "export": lambda: _copy(nano_artifact, tmp_path / "m.safetensors"),
              "quantize": lambda: _copy(dense["onnx"], tmp_path / "m.onnx"),
              "build": lambda: _copy(dense["onnx"], tmp_path / "m.onnx"),
              "bench": lambda: _copy(nano_artifact, tmp_path / "m.safetensors")}[case]()
    digest = file_sha256(source)
    out = SPELLINGS[spelling](source)
    args = {"materialize": ["materialize", source.name, "-o", out],
            "import": ["import", "dynamicvit", source.name, "--model", "vit-nano", "--keep-ratio", "0.7", "-o", out],
            "export": ["export", source.name, "-o", out],
            "quantize": ["quantize", source.name, "--data", "digits", "-o", out],
            "build": ["build", source.name, "-o", out],
            "bench": ["bench", source.name, "--batch-sizes", "1", "--report", out]}[case]
    flag = "--report" if case == "bench" else "--out"
    line = fails(invoke(*args), 2, f"{flag} {Path(out)} would write over the input {source.name}")
    assert line.endswith(("(the same file); choose another path" if spelling in ("symlink", "hardlink")
                          else f"{source.name}; choose another path")), line
    assert file_sha256(source) == digest and temporaries(tmp_path) == []


@pytest.mark.parametrize("case", ["train-model", "train-checkpoint", "compress-dynamicvit", "compress-uvc"])
def test_a_folder_output_never_writes_over_an_input(tmp_path: Path, nano_artifact: Path, dvt_art: Path,
                                                    case: str) -> None:
    """The files a training command writes into --out are checked against its inputs before any training."""
    run = tmp_path / "run"
    run.mkdir()
    name, args = {
        "train-model": ("model.safetensors", ["train", "--model", run / "model.safetensors", "--data", "digits"]),
        "train-checkpoint": ("checkpoint.pt", ["train", "--model", "vit-nano", "--checkpoint", run / "checkpoint.pt",
                                               "--data", "digits"]),
        "compress-dynamicvit": ("compressed.safetensors", ["compress", "dynamicvit", run / "compressed.safetensors",
                                                           "--data", "digits"]),
        "compress-uvc": ("compressed.safetensors", ["compress", "uvc", run / "compressed.safetensors", "--data",
                                                    "digits", "--budget", "0.5"]),
    }[case]
    source = _copy(nano_artifact, run / name)
    digest = file_sha256(source)
    fails(invoke(*args, "--epochs", "1", "--out", run), 2,
          f"--out {run}: {source} would write over the input {source}; choose another path")
    assert file_sha256(source) == digest and sorted(p.name for p in run.iterdir()) == [name]


def test_every_atomic_write_of_a_command_refuses_its_inputs(tmp_path: Path) -> None:
    """The net under the up-front check: inside protect_inputs, a write onto an input (any spelling) is refused."""
    from vitc.core.errors import UsageError
    from vitc.core.fileio import protect_inputs, write_text

    source = tmp_path / "in.json"
    source.write_text("{}")
    (tmp_path / "alias.json").symlink_to(source)
    with protect_inputs([source]):
        for spelling in (source, tmp_path / "alias.json", tmp_path / "." / "in.json"):
            with pytest.raises(UsageError, match=r"would write over the input .*in\.json"):
                write_text(spelling, "overwritten")
        write_text(tmp_path / "other.json", "fine")
    assert source.read_text() == "{}" and temporaries(tmp_path) == []
    write_text(source, "outside the command it may be rewritten")
