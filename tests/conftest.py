"""Shared test helpers and fixtures: a quiet environment for subprocesses, an untrained vit-nano artifact, and
the exported dense / token-selection models several test modules use.

Fixtures used by one test file live in that file.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# One CPU thread for the libraries the tests run in this process (torch's OpenMP pool, ONNX Runtime and
# OpenVINO read OMP_NUM_THREADS through vitc's defaults), as subprocess_env gives every vitc subprocess: the
# models are tiny, and on a loaded 2-core machine libgomp's spinning workers made a 2-thread DynamicViT
# compress ~5x slower than the same run on one thread (35 s vs 6.6 s). Set before anything imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

if TYPE_CHECKING:
    import torch

    from vitc.core.spec import ViTSpec

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

    from vitc.core.artifacts import save_model
    from vitc.core.models import resolve_model

    torch.manual_seed(0)
    model, spec = resolve_model("vit-nano")
    return save_model(tmp_path_factory.mktemp("nano") / "nano.safetensors", model, spec)


def uvc_nano_artifact(path: Path, skip: tuple[int, ...] = ()) -> Path:
    """A UVC artifact of vit-nano made without a search: blocks ``skip`` skipped, one of two heads and half the MLP
    neurons removed."""
    import torch

    from vitc.core.models import resolve_model
    from vitc.methods.uvc.compress import save_uvc
    from vitc.methods.uvc.model import UVCViT, apply_masks, masks_from_counts

    torch.manual_seed(0)
    vit, spec = resolve_model("vit-nano")
    net = UVCViT(vit, gate_mode="hard")
    for i in skip:
        net.gate_logits.data[i] = torch.tensor([0.3, -0.2])  # skip > keep
    masks = masks_from_counts(net.vit, spec, torch.tensor([[1.0, 32.0]] * spec.depth), None)
    apply_masks(net.vit, masks)
    return save_uvc(path, net, spec, masks, {"method": "uvc", "budget": 0.6})


@pytest.fixture(scope="session")
def uvc_nano(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`uvc_nano_artifact`, written once per session (test_combined, test_trust2)."""
    return uvc_nano_artifact(tmp_path_factory.mktemp("uvc") / "uvc.safetensors")


DVT_RATIO = 0.7


@pytest.fixture(scope="session")
def dvt_art(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained DynamicViT (kind dynamicvit) artifact of vit-nano, to materialize (test_trust, test_trust2)."""
    import torch

    from vitc.core.artifacts import save_artifact
    from vitc.core.models import resolve_model
    from vitc.methods.dynamicvit.compress import attach_predictors

    torch.manual_seed(0)
    model, spec = resolve_model("vit-nano")
    model, spec = attach_predictors(model, spec, 0.7, [1, 2, 3])
    path = tmp_path_factory.mktemp("dvt") / "compressed.safetensors"
    return save_artifact(path, spec, model.state_dict(), kind="dynamicvit", meta={"keep_ratio": 0.7})


# ------------------------------------------------------------------------------------------------
# shared exports (test_export, test_verify, test_quantize, test_ort_runner, test_runners, test_openvino, test_pipeline_preflight)
# ------------------------------------------------------------------------------------------------

def dvt_spec() -> ViTSpec:
    """UVC-like (heterogeneous heads and MLP widths, 3 of 4 blocks) + DynamicViT (2 selection stages)."""
    from vitc.core.models import SMALL_CONFIGS
    from vitc.core.spec import BlockSpec
    from vitc.core.token_select import keep_counts

    base = SMALL_CONFIGS["vit-nano"]
    k1, k2 = keep_counts(base.num_patches, DVT_RATIO, 2)
    blocks = [BlockSpec(2, 16, 48), BlockSpec(1, 16, 64, keep_tokens=k1), BlockSpec(2, 16, 24, keep_tokens=k2)]
    return base.replace(name="vit-nano-uvc-dvt", blocks=blocks)


def dvt_model(seed: int) -> torch.nn.Module:
    import torch

    from vitc.core.spec import build_model
    from vitc.core.token_select import TokenSelect

    torch.manual_seed(seed)
    model = build_model(dvt_spec(), init_weights=True)
    with torch.no_grad():  # timm's init gives near-equal token scores; spread them as training would
        for sel in model.modules():
            if isinstance(sel, TokenSelect):
                for lin in sel.predictor.modules():
                    if isinstance(lin, torch.nn.Linear):
                        lin.weight.normal_(0, 0.5)
    return model.eval()


def exported(tmp_path_factory: pytest.TempPathFactory, name: str) -> dict[str, Any]:
    """``{"artifact", "onnx", "result"}`` for ``dense`` or ``dvt``, built once per session (cached on disk)."""
    folder = tmp_path_factory.getbasetemp() / "vitc-export-cache"
    folder.mkdir(exist_ok=True)
    art, onnx_path, result_path = folder / f"{name}.safetensors", folder / f"{name}.onnx", folder / f"{name}.json"
    if not result_path.exists():
        import torch

        from vitc.core.artifacts import save_model
        from vitc.core.models import SMALL_CONFIGS
        from vitc.core.spec import build_model

        if name == "dense":
            torch.manual_seed(0)
            spec = SMALL_CONFIGS["vit-nano"]
            save_model(art, build_model(spec, init_weights=True), spec)
            from click.testing import CliRunner

            from vitc.cli import cli

            r = CliRunner().invoke(cli, ["export", str(art), "--out", str(onnx_path), "--json"])
            assert r.exit_code == 0, r.output
            result = json.loads(r.stdout)
        else:
            save_model(art, dvt_model(0), dvt_spec(), meta={"method": "dynamicvit", "keep_ratio": DVT_RATIO})
            from vitc.checks.export import export_verified

            result = export_verified(str(art), onnx_path)
        result_path.write_text(json.dumps(result))
    return {"artifact": str(art), "onnx": str(onnx_path), "result": json.loads(result_path.read_text())}


@pytest.fixture(scope="session")
def dense(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A seeded vit-nano artifact and its verified ONNX (exported through the CLI)."""
    return exported(tmp_path_factory, "dense")


@pytest.fixture(scope="session")
def dvt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A heterogeneous (UVC-like) token-selection model and its verified ONNX."""
    return exported(tmp_path_factory, "dvt")
