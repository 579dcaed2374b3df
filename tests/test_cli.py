"""The command line: --help everywhere, light imports, and every bad input answered in one line."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner
from conftest import VITC, one_error_line, subprocess_env

from vitc.cli import COMMANDS, cli


def test_top_level_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_subcommand_help(name: str) -> None:
    module, attr = COMMANDS[name].split(":")
    command = getattr(importlib.import_module(module), attr)  # an import error is a failure, not a skip
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Usage: cli {name}" in result.stdout or f"Usage: vitc {name}" in result.stdout
    _assert_documented(command)


def _assert_documented(command: click.Command) -> None:
    undocumented = [p.name for p in command.params if isinstance(p, click.Option) and not p.help and not p.hidden]
    assert undocumented == [], f"vitc {command.name}: options without --help text: {undocumented}"


def _all_commands() -> list[list[str]]:
    """Every command path, sub-groups included (vitc compress uvc, ...)."""
    ctx = click.Context(cli)
    paths = []
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        paths.append([name])
        if isinstance(command, click.Group):
            paths += [[name, sub] for sub in command.list_commands(click.Context(command))]
    return paths


@pytest.mark.parametrize("path", _all_commands(), ids=" ".join)
def test_every_subcommand_has_help(path: list[str]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Usage: cli {' '.join(path)}" in result.stdout
    command: click.Command | None = cli
    for part in path:
        assert isinstance(command, click.Group)
        command = command.get_command(click.Context(command), part)
    assert command is not None
    _assert_documented(command)


def test_cli_import_and_help_stay_light() -> None:
    """``vitc --help`` imports every command module but not torch (Click's deferred-import advice)."""
    code = ("import sys; from click.testing import CliRunner; from vitc.cli import cli; "
            "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0, r.output; "
            "assert 'torch' not in sys.modules, 'torch imported by --help'")
    subprocess.run([sys.executable, "-c", code], check=True, env=subprocess_env(), timeout=60)


def test_console_script_and_module_entry_points() -> None:
    for argv in (VITC, [sys.executable, "-m", "vitc"]):
        run = subprocess.run([*argv, "--version"], capture_output=True, text=True, env=subprocess_env(), timeout=60)
        assert run.returncode == 0 and "vitc, version" in run.stdout


def test_missing_command_module_is_listed_and_fails_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.lazy_subcommands, "teleport", "vitc.cli.teleport:teleport")
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0 and "teleport" in result.stdout and "unavailable" in result.stdout
    result = CliRunner().invoke(cli, ["teleport", "--anything", "x"])
    assert result.exit_code == 1
    assert one_error_line(result.stderr).startswith("error: vitc teleport is unavailable: No module named")


def test_rank_prefix_under_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    result = CliRunner().invoke(cli, ["info", "no-such-model"])
    assert result.exit_code == 2
    assert one_error_line(result.stderr).startswith("error: rank 1: unknown model 'no-such-model'")


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory, nano_artifact: Path) -> dict[str, Path]:
    from safetensors.torch import save_file

    from vitc.core.models import resolve_model

    root = tmp_path_factory.mktemp("damaged")
    data = nano_artifact.read_bytes()
    (root / "cut.safetensors").write_bytes(data[: len(data) - 1000])
    save_file({"w": torch.zeros(3)}, str(root / "foreign.safetensors"))
    torch.save(resolve_model("vit-nano", num_classes=4)[0].state_dict(), root / "four.pth")
    return {"cut": root / "cut.safetensors", "foreign": root / "foreign.safetensors", "four": root / "four.pth"}


BAD_INPUTS = [
    # (args, exit code, words in the one error line)
    (["info", "vit_giant_nonsense"], 2, "unknown model 'vit_giant_nonsense'"),
    (["info", "eva02_tiny_patch14_224"], 2, "rotary"),
    (["info", "vit-nano", "--img-size", "18"], 2, "not a multiple of patch_size"),
    (["info", "{cut}"], 2, "truncated or corrupt"),
    (["info", "{foreign}"], 2, "not a vitc artifact"),
    (["info", "{nano}", "--img-size", "32"], 2, "--img-size does not apply to an artifact"),
    (["eval", "{cut}", "--data", "digits"], 2, "truncated or corrupt"),
    (["eval", "{foreign}", "--data", "digits"], 2, "not a vitc artifact"),
    (["eval", "{nano}", "--data", "imagefolder:/no/such/folder"], 2, "does not exist"),
    (["eval", "{nano}", "--data", "cifar10"], 2, "unknown data source"),
    (["eval", "vit-nano", "--data", "digits", "--checkpoint", "{four}"], 2, "head.weight has shape [4, 32]"),
    (["eval", "vit-nano", "--data", "digits", "--device", "tpu"], 2, "unknown device"),
    (["train", "--model", "vit-nano", "--data", "digits", "--out", "{tmp}", "--checkpoint", "{four}"], 2, "head.weight"),
    (["train", "--model", "nope-net", "--data", "digits", "--out", "{tmp}"], 2, "unknown model 'nope-net'"),
    (["train", "--model", "vit-nano", "--data", "imagefolder:{tmp}", "--out", "{tmp}"], 2, "neither a train/ nor a val/"),
    (["train", "--model", "vit-nano", "--data", "synthetic:4", "--out", "{tmp}", "--batch-size", "8"], 2, "fewer than one batch"),
    (["train", "--model", "vit-nano", "--data", "digits", "--out", "{tmp}", "--resume"], 2, "no checkpoint at"),
    (["train", "--model", "{cut}", "--data", "digits", "--out", "{tmp}"], 2, "truncated or corrupt"),
    (["train", "--model", "vit-nano", "--data", "digits", "--out", "{tmp}", "--device", "cuda:7"], 2, "cuda"),
]


@pytest.mark.parametrize("args,code,words", BAD_INPUTS, ids=[" ".join(a[:2]) + f" {w[:20]}" for a, _, w in BAD_INPUTS])
def test_bad_input_is_one_line_and_the_right_exit_code(tmp_path: Path, damaged: dict, nano_artifact: Path,
                                                         args: list[str], code: int, words: str) -> None:
    paths = {**{k: str(v) for k, v in damaged.items()}, "nano": str(nano_artifact), "tmp": str(tmp_path)}
    result = CliRunner().invoke(cli, [a.format(**paths) for a in args])
    assert result.exit_code == code, result.output
    assert words in one_error_line(result.stderr)
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [["train", "--model", "vit-nano", "--data", "digits", "--out", "x", "--epochs", "-1"],
     ["train", "--model", "vit-nano", "--data", "digits", "--out", "x", "--lr", "0"],
     ["train", "--model", "vit-nano", "--data", "digits", "--out", "x", "--seed", "-3"],
     ["train", "--model", "vit-nano", "--data", "digits", "--out", "x", "--max-grad-norm", "-1"],
     ["eval", "vit-nano", "--data", "digits", "--backend", "coreml"],
     ["info"]],
)
def test_click_usage_errors_exit_2(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
