"""benchmarks.shapes: the short DeiT-S UVC search as a command gives the library's settings, the hand-built
UVC stand-in lands at its MACs budget, and token selection sits where DynamicViT puts its predictors."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from benchmarks.shapes import DENSE_MODEL, hand_built_uvc_like, short_search_command, short_search_settings, with_tokens
from vitc.core.errors import UsageError
from vitc.core.flops import model_macs
from vitc.core.models import resolve_spec


def test_the_short_search_command_parses_to_the_library_settings() -> None:
    from vitc.cli.compress import compress_command
    from vitc.cli.options import collect
    from vitc.methods import METHODS

    command = short_search_command("runs/deits/uvc")
    words = shlex.split(command)
    assert words[:4] == ["vitc", "compress", "uvc", DENSE_MODEL]
    assert "--data synthetic:64 --budget 0.5 --epochs 4 --finetune-epochs 0 --batch-size 4 --gate-warmup-epochs 0 " \
           "--z-lr-schedule 2000 --gate-lr 5 --gate-interval 1 -o runs/deits/uvc" in command
    method = METHODS["uvc"]
    ctx = compress_command(method).make_context("uvc", words[3:])
    assert ctx.params["data"] == "synthetic:64"
    parsed = collect(method.settings, dict(ctx.params), ctx)
    assert dataclasses.replace(parsed, device="cpu") == short_search_settings("cpu")


def test_benchmarks_readme_shows_the_same_short_search() -> None:
    """The README's DeiT-S example is this search, so its numbers and the scripts' shapes are the same run."""
    text = (Path(__file__).resolve().parents[1] / "benchmarks" / "README.md").read_text()
    assert short_search_command("runs/deits/uvc") in re.sub(r"\\\n\s*", "", text)


def test_the_hand_built_uvc_stand_in_meets_its_budget() -> None:
    spec = resolve_spec(DENSE_MODEL)
    shaped = hand_built_uvc_like(spec, 0.5)
    ratio = model_macs(shaped) / model_macs(spec)
    assert 0.49 < ratio <= 0.5
    assert shaped.depth == spec.depth - 1 and all(b.mlp_hidden % 8 == 0 for b in shaped.blocks)
    assert shaped.blocks[0].heads == 6 and shaped.blocks[-1].heads < 6  # heads taper with depth
    with pytest.raises(UsageError, match=r"^--budget 0.001 is below what the hand-built shape can reach$"):
        hand_built_uvc_like(spec, 0.001)


def test_token_selection_keeps_floor_n_rho_s_before_blocks_3_6_9() -> None:
    spec, stages = with_tokens(resolve_spec(DENSE_MODEL), 0.7)
    assert stages == [3, 6, 9]
    assert [b.keep_tokens for b in spec.blocks if b.keep_tokens is not None] == [137, 96, 67]
