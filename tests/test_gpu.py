"""The GPU path: half precision, CUDA graphs, torch.compile, AMP training and resume, CUDA-event timing,
ONNX Runtime's CUDA provider and TensorRT.

Every test here is marked ``gpu`` (deselected by default) and skips without CUDA; run them with
``pytest -m gpu tests/test_gpu.py`` (``python -m benchmarks.gpu_check`` does, on the device machine).

Models: DeiT-S shapes (``resolve_spec("deit_small_patch16_224")``) with seeded random weights — dense,
a UVC result (blocks skipped, heads and MLP neurons removed, through ``save_uvc`` and ``materialize``)
and a DynamicViT result (ρ 0.7, through ``materialize``); shape tests need no training. Random-weight
logits are small (std ~0.4 for DeiT-S) and near-tied, so precision checks compare the whole logit
tensor relatively (‖a − b‖ / ‖b‖ and cosine), never top-1. Measured on CPU for these models: bf16 gives
‖Δ‖/‖ref‖ ≈ 1.2e-2, fp16 ≈ 1.6e-3; the tolerances below leave 4–6× headroom. Token-selection models
can keep another token where two scores nearly tie, so they are compared with the fp32 model run on
the tokens the half-precision model kept (as ``vitc verify`` does), plus a check that the first stage
keeps (nearly) the same tokens.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import dvt_model, dvt_spec

from vitc.backends.tensorrt.common import tensorrt_version
from vitc.backends.torch_runner import TorchRunner
from vitc.checks.bench import BenchSettings, Row, bench, synthetic_batch
from vitc.cli import cli
from vitc.core.artifacts import load_artifact, save_artifact, save_model
from vitc.core.models import resolve_model, resolve_spec
from vitc.core.spec import ViTSpec, build_model
from vitc.core.token_select import TokenSelect
from vitc.methods import materialize, resolve_any
from vitc.methods.dynamicvit.forward import gathered_forward

CUDA = torch.cuda.is_available()
DEVICE = "cuda"  # every test body runs here (a CPU dry run of the bodies can set "cpu")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)")]


def _ort_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


needs_ort_cuda = pytest.mark.skipif(not _ort_cuda(), reason="onnxruntime has no CUDAExecutionProvider here (onnxruntime-gpu "
                                                            "is not installed)")
needs_trt = pytest.mark.skipif(tensorrt_version() is None, reason="TensorRT is not installed (pip install 'vitc[gpu]')")

DEIT_S = "deit_small_patch16_224"
VARIANTS = ("dense", "uvc", "dynamicvit")
# max ‖half − fp32‖ / ‖fp32‖ of the logits, and min cosine per image (see the module docstring)
REL_TOL = {"fp32": 1e-2, "fp16": 1e-2, "bf16": 5e-2}  # fp32 on CUDA: cuDNN convolutions use TF32 by default
MIN_COSINE = {"fp32": 0.9999, "fp16": 0.9995, "bf16": 0.995}
FIRST_STAGE_OVERLAP = 0.9  # fraction of first-stage kept tokens a half-precision model shares with fp32
UVC_SKIPPED = (4, 7, 10)  # blocks the UVC gates skip in the UVC-shaped model


# ------------------------------------------------------------------------------------------------
# models: DeiT-S shapes, seeded random weights, through the real artifact and materialize paths
# ------------------------------------------------------------------------------------------------

def spread_predictors(model: torch.nn.Module, std: float = 0.5) -> None:
    """timm's init gives near-equal token scores; spread them as training would (ties make fp16 flip tokens)."""
    with torch.no_grad():
        for sel in model.modules():
            if isinstance(sel, TokenSelect):
                for lin in sel.predictor.modules():
                    if isinstance(lin, torch.nn.Linear):
                        lin.weight.normal_(0, std)


def dense_artifact(folder: Path, spec: ViTSpec, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return save_model(folder / "dense.safetensors", build_model(spec, init_weights=True), spec)


def uvc_artifact(folder: Path, spec: ViTSpec, seed: int = 1) -> Path:
    """A UVC artifact (masked weights, gate logits, masks) → ``vitc materialize`` → the sliced model's artifact.

    Gates skip ``UVC_SKIPPED``; block i loses i mod 4 heads and 97·i + 13 MLP neurons (odd widths, as
    searches give).
    """
    from vitc.methods.uvc.compress import save_uvc
    from vitc.methods.uvc.model import UVCViT, apply_masks, masks_from_counts

    torch.manual_seed(seed)
    vit = build_model(spec, init_weights=True)
    gates = torch.tensor([[1.0, -1.0] if i in UVC_SKIPPED else [-1.0, 1.0] for i in range(spec.depth)])  # (skip, keep)
    counts = torch.tensor([[float(i % 4), float(97 * i + 13)] for i in range(spec.depth)])
    masks = masks_from_counts(vit, spec, counts, None)
    apply_masks(vit, masks)
    net = UVCViT(vit, gates, gate_mode="hard")
    path = save_uvc(folder / "uvc.safetensors", net, spec, masks, {"method": "uvc", "budget": 0.5})
    return Path(materialize(path, folder / "uvc-materialized.safetensors")["artifact"])


def dynamicvit_artifact(folder: Path, spec: ViTSpec, keep_ratio: float = 0.7, seed: int = 2) -> Path:
    """A DynamicViT artifact (predictors before blocks 3, 6, 9) → ``vitc materialize --keep-ratios`` → its artifact."""
    from vitc.methods.dynamicvit.compress import attach_predictors, resolve_stages

    torch.manual_seed(seed)
    student, new_spec = attach_predictors(build_model(spec, init_weights=True), spec, keep_ratio, resolve_stages(spec, None))
    spread_predictors(student)
    path = save_artifact(folder / "dynamicvit.safetensors", new_spec, student.state_dict(), kind="dynamicvit",
                         meta={"method": "dynamicvit", "keep_ratio": keep_ratio})
    return Path(materialize(path, folder / "dynamicvit", [keep_ratio])["variants"][0]["artifact"])


def make_variants(folder: Path, name: str = DEIT_S) -> dict[str, Path]:
    spec = resolve_spec(name)
    return {"dense": dense_artifact(folder, spec), "uvc": uvc_artifact(folder, spec),
            "dynamicvit": dynamicvit_artifact(folder, spec)}


@pytest.fixture(scope="module")
def deit_s(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """DeiT-S-shaped dense, UVC-materialized and DynamicViT-materialized artifacts (random weights)."""
    return make_variants(tmp_path_factory.mktemp("deit-s"))


# ------------------------------------------------------------------------------------------------
# comparisons
# ------------------------------------------------------------------------------------------------

def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def min_cosine(out: np.ndarray, ref: np.ndarray) -> float:
    num = (out * ref).sum(1)
    return float((num / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))).min())


def has_token_selection(spec: ViTSpec) -> bool:
    return any(b.keep_tokens is not None for b in spec.blocks)


def precision_report(path: str | Path, precision: str, device: str, batch: int = 8) -> dict[str, Any]:
    """Logits of the torch runner at ``precision`` on ``device`` against fp32 on the CPU (same weights).

    Token-selection models: the fp32 reference runs on the tokens the runner's model kept, and
    ``overlap`` is the share of first-stage tokens both precisions keep.
    """
    model, spec = resolve_any(str(path))
    x = synthetic_batch(spec.input_shape, batch, seed=1)
    ref_model = copy.deepcopy(model).float().eval()
    runner = TorchRunner(model, spec, device=device, precision=precision)
    out = runner(x)
    report: dict[str, Any] = {"shape": out.shape, "dtype": out.dtype, "describe": runner.describe()}
    if has_token_selection(spec):
        with torch.inference_mode():
            logits, idx = gathered_forward(runner.model, runner.stage(x))
            ref, _ = gathered_forward(ref_model, torch.from_numpy(x), indices=[i.cpu() for i in idx])
            _, own = gathered_forward(ref_model, torch.from_numpy(x))
        report["self_error"] = relative_error(out, logits.float().cpu().numpy())  # the runner ran this very forward
        kept, kept_ref = idx[0].cpu(), own[0]
        report["overlap"] = float(np.mean([len(set(a.tolist()) & set(b.tolist())) / a.numel() for a, b in zip(kept, kept_ref)]))
        reference = ref.numpy()
    else:
        reference = TorchRunner(ref_model, spec, device="cpu", precision="fp32")(x)
    report["rel"] = relative_error(out, reference)
    report["cosine"] = min_cosine(out, reference)
    return report


def assert_close_rel(out: np.ndarray, ref: np.ndarray, rel: float, what: str) -> None:
    err = relative_error(out, ref)
    assert err <= rel, f"{what}: ||a - b|| / ||b|| = {err:.3g} > {rel:g}"


# ------------------------------------------------------------------------------------------------
# torch runner: precision, CUDA graphs, torch.compile
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_torch_runner_half_precision_matches_fp32(deit_s: dict[str, Path], variant: str, precision: str) -> None:
    r = precision_report(deit_s[variant], precision, DEVICE)
    assert r["shape"] == (8, 1000) and r["dtype"] == np.float32
    assert r["describe"]["device"].startswith(DEVICE) and r["describe"]["precision"] == precision
    assert r["rel"] <= REL_TOL[precision], f"{variant} {precision}: relative logit error {r['rel']:.3g} > {REL_TOL[precision]}"
    assert r["cosine"] >= MIN_COSINE[precision], f"{variant} {precision}: min cosine {r['cosine']:.6f}"
    if "overlap" in r:
        assert r["self_error"] <= 1e-3, f"the runner's logits are not its model's gathered forward ({r['self_error']:.3g})"
        assert r["overlap"] >= FIRST_STAGE_OVERLAP, f"{precision} keeps other first-stage tokens than fp32 ({r['overlap']:.3f})"


@pytest.mark.parametrize("variant", VARIANTS)
def test_cuda_graph_replay_equals_eager(deit_s: dict[str, Path], variant: str) -> None:
    """Captured once per batch size, replayed on new inputs: the eager runner's logits every time."""
    model, spec = resolve_any(str(deit_s[variant]))
    eager = TorchRunner(model, spec, device="cuda", precision="fp16")
    graph = TorchRunner(model, spec, device="cuda", precision="fp16", cuda_graph=True)  # same weights
    assert graph.describe()["cuda_graph"] is True
    # a token-selection model may break a near-tie differently if the captured GEMMs round differently
    tol = 2e-2 if has_token_selection(spec) else 1e-3
    for batch in (1, 8, 1):
        x1, x2 = (synthetic_batch(spec.input_shape, batch, seed=s) for s in (batch, batch + 100))
        g1, g2 = graph(x1), graph(x2)  # the second call replays the graph the first one captured
        assert_close_rel(g1, eager(x1), tol, f"{variant} batch {batch} first replay")
        assert_close_rel(g2, eager(x2), tol, f"{variant} batch {batch} replay on new input")
        assert relative_error(g2, g1) > 1e-2, "the replay ignored its new input"
    staged = graph.stage(synthetic_batch(spec.input_shape, 8, seed=8))
    out = graph.run_staged(staged)
    assert out.is_cuda and out.dtype == torch.float16 and tuple(out.shape) == (8, 1000)


def test_torch_compile_equals_eager() -> None:
    """The runner's own compile mode on a dense model (fp16), and inductor's default mode with CUDA graphs on
    a UVC+DynamicViT-shaped model (fp32, so no token near-tie flips between the two)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model, spec = resolve_model("vit-nano")
    eager = TorchRunner(model, spec, device="cuda", precision="fp16")
    compiled = TorchRunner(model, spec, device="cuda", precision="fp16", compile=True)
    assert compiled.describe()["compile"] is True and compiled.describe()["compile_mode"] == "max-autotune-no-cudagraphs"
    for batch in (2, 4):
        x = synthetic_batch(spec.input_shape, batch, seed=batch)
        assert_close_rel(compiled(x), eager(x), 1e-2, f"compiled fp16 batch {batch}")

    torch._dynamo.reset()
    dvt, dspec = dvt_model(0), dvt_spec()
    eager = TorchRunner(dvt, dspec, device="cuda", precision="fp32")
    both = TorchRunner(dvt, dspec, device="cuda", precision="fp32", compile=True, cuda_graph=True, compile_mode="default")
    assert both.describe()["compile_mode"] == "default"
    for batch in (2, 4, 2):
        x = synthetic_batch(dspec.input_shape, batch, seed=batch)
        assert_close_rel(both(x), eager(x), 1e-3, f"compiled + CUDA graph fp32 batch {batch}")
    torch._dynamo.reset()


# ------------------------------------------------------------------------------------------------
# training: one UVC and one DynamicViT compress run with AMP, interrupted and resumed
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded vit-micro artifact: the dense model both compress tests start from."""
    torch.manual_seed(0)
    model, spec = resolve_model("vit-micro")
    return save_model(tmp_path_factory.mktemp("micro") / "micro.safetensors", model, spec)


def interrupt_after_epoch(monkeypatch: pytest.MonkeyPatch, run: Any, epoch: int = 1) -> None:
    """Run ``run()`` until the loop has written the checkpoint of ``epoch``, then stop it as a kill would."""
    from vitc.train import loop

    original = loop.save_checkpoint

    def save_then_stop(path: Path, state: dict[str, Any]) -> None:
        original(path, state)
        if state["epoch"] == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_stop)
    try:
        with pytest.raises(KeyboardInterrupt):
            run()
    finally:
        monkeypatch.setattr(loop, "save_checkpoint", original)


def check_amp_checkpoint(path: Path, epoch: int) -> None:
    from vitc.train.loop import load_checkpoint

    state = load_checkpoint(path)
    assert state["epoch"] == epoch
    assert state["scaler"] and state["scaler"]["scale"] > 0, "no GradScaler state: AMP did not run"
    assert state["config"]["amp"] is True and state["config"]["device"] == DEVICE


def check_finite_losses(metrics: Path) -> list[dict[str, Any]]:
    epochs = json.loads(metrics.read_text())["epochs"]
    assert epochs, f"{metrics} has no epochs"
    for record in epochs:
        for key, value in record.items():
            if key in ("loss", "ce", "kd", "kl", "token", "ratio"):
                assert math.isfinite(value), f"{metrics}: epoch {record['epoch']} {key} = {value}"
    return epochs


def check_same_artifact(a: Path, b: Path, start: Path, atol: float = 1e-4, rtol: float = 1e-3) -> None:
    """``b`` (interrupted and resumed) equals ``a`` (uninterrupted) within tolerance, and training moved the
    weights much more than that tolerance (so the comparison means something)."""
    ta, tb, t0 = load_artifact(a).tensors, load_artifact(b).tensors, load_artifact(start).tensors
    assert ta.keys() == tb.keys()
    for key in ta:
        torch.testing.assert_close(tb[key].float(), ta[key].float(), atol=atol, rtol=rtol, msg=lambda m, k=key: f"{k}: {m}")
    moved = max(float((ta[k].float() - t0[k].float()).abs().max()) for k in t0 if k in ta and ta[k].shape == t0[k].shape)
    assert moved > 10 * atol, f"training barely moved the weights ({moved:.3g}); the resume check would be vacuous"


def test_uvc_compress_with_amp_resumes_like_an_uninterrupted_run(micro: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from vitc.methods.uvc.compress import ARTIFACT_NAME, compress_uvc
    from vitc.methods.uvc.settings import UVCSettings

    def settings() -> UVCSettings:  # budget 1.0: any state qualifies, so one search epoch always hands over
        return UVCSettings(budget=1.0, epochs=2, finetune_epochs=1, batch_size=16, gate_warmup_epochs=0,
                           device=DEVICE, deterministic=True, seed=0)

    data = "synthetic:96"
    straight = compress_uvc(str(micro), data, tmp_path / "a", settings())
    assert straight is not None and Path(straight["artifact"]).is_file()
    check_amp_checkpoint(tmp_path / "a" / "search" / "checkpoint.pt", 2)
    check_amp_checkpoint(tmp_path / "a" / "finetune" / "checkpoint.pt", 1)
    history = check_finite_losses(tmp_path / "a" / "metrics.json")
    assert [r["stage"] for r in history] == ["search", "search", "finetune"]

    interrupt_after_epoch(monkeypatch, lambda: compress_uvc(str(micro), data, tmp_path / "b", settings()))
    check_amp_checkpoint(tmp_path / "b" / "search" / "checkpoint.pt", 1)
    resumed = compress_uvc(str(micro), data, tmp_path / "b", settings(), resume=True)
    assert resumed is not None
    check_same_artifact(tmp_path / "a" / ARTIFACT_NAME, tmp_path / "b" / ARTIFACT_NAME, micro)
    assert resumed["gates"] == straight["gates"] and resumed["neurons_kept"] == straight["neurons_kept"]
    for ra, rb in zip(history, check_finite_losses(tmp_path / "b" / "metrics.json")):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-3)


def test_dynamicvit_compress_with_amp_resumes_like_an_uninterrupted_run(micro: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from vitc.methods.dynamicvit.compress import ARTIFACT_NAME, compress_dynamicvit
    from vitc.methods.dynamicvit.settings import DynamicViTSettings

    def settings() -> DynamicViTSettings:  # one frozen-backbone epoch, then one with the backbone training
        return DynamicViTSettings(keep_ratio=0.7, epochs=2, freeze_epochs=1, batch_size=16, device=DEVICE,
                                  deterministic=True, seed=0)

    data = "synthetic:96"
    straight = compress_dynamicvit(str(micro), data, tmp_path / "a", settings())
    assert straight is not None and straight["keep_tokens"] == [44, 31, 21]
    check_amp_checkpoint(tmp_path / "a" / "checkpoint.pt", 2)
    history = check_finite_losses(tmp_path / "a" / "metrics.json")
    assert len(history) == 2

    interrupt_after_epoch(monkeypatch, lambda: compress_dynamicvit(str(micro), data, tmp_path / "b", settings()))
    check_amp_checkpoint(tmp_path / "b" / "checkpoint.pt", 1)
    assert compress_dynamicvit(str(micro), data, tmp_path / "b", settings(), resume=True) is not None
    check_same_artifact(tmp_path / "a" / ARTIFACT_NAME, tmp_path / "b" / ARTIFACT_NAME, micro)
    for ra, rb in zip(history, check_finite_losses(tmp_path / "b" / "metrics.json")):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-3)


# ------------------------------------------------------------------------------------------------
# timing and the environment
# ------------------------------------------------------------------------------------------------

FAST = ["--min-iters", "5", "--min-seconds", "0", "--warmup-ms", "0", "--device", "cuda", "--json"]


@pytest.mark.parametrize("extra", [[], ["--cuda-graph"]], ids=["eager", "cuda-graph"])
def test_vitc_bench_on_cuda_reports_gpu_compute_time_from_cuda_events(extra: list[str]) -> None:
    r = CliRunner().invoke(cli, ["bench", "vit-micro", "--precision", "fp16", "--batch", "1,8", *extra, *FAST])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)  # vitc.bench/2
    (target,) = report["targets"]
    assert target["device"].startswith("cuda") and target["precision"] == "fp16"
    assert target["runner"]["cuda_graph"] is bool(extra)
    assert report["environment"]["gpu"]["name"]
    for x in (res["rows"][0] for res in report["results"]):
        gpu, lat = x["gpu_compute_ms"], x["latency_ms"]
        assert gpu is not None and gpu["median"] > 0 and x["cv_of"] == "gpu_compute", x
        assert gpu["median"] <= lat["median"] * 1.05 + 0.05, "GPU time between the events exceeds the host-timed latency"
        assert x["iterations"] == 5


def test_vitc_bench_compare_on_cuda_gives_gpu_compute_speedup() -> None:
    r = CliRunner().invoke(cli, ["bench", "--compare", "vit-micro", "vit-nano", "--precision", "fp16", "--batch", "8", *FAST])
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout)["results"]
    a, b = res["rows"]  # the reference, then the compared target with its speedups
    assert a["gpu_compute_ms"] and b["gpu_compute_ms"]
    assert b["speedup_gpu_compute"] == pytest.approx(a["gpu_compute_ms"]["median"] / b["gpu_compute_ms"]["median"])


def measure(runner: Any, batch: int, min_iters: int) -> Row:
    """One runner at one batch size through the one bench protocol (no warm-up, no peak GEMM)."""
    settings = BenchSettings(batch_sizes=[batch], warmup_ms=0, min_iters=min_iters, min_seconds=0, peak=False)
    return bench([runner], settings=settings, show_progress=False).results[0].rows[0]


def test_measure_times_a_cuda_graph_runner_with_events() -> None:
    torch.manual_seed(0)
    model, spec = resolve_model("vit-micro")
    with TorchRunner(model, spec, device="cuda", precision="bf16", cuda_graph=True) as runner:
        r = measure(runner, 16, min_iters=7)
    assert r.iterations == 7 and r.gpu_compute_ms is not None and r.images_per_s > 0


def test_environment_describes_the_gpu() -> None:
    from vitc.checks.environment import environment
    from vitc.core.device import gpu_info

    info = gpu_info(0)
    assert info["name"] and info["memory_gib"] > 0 and info["cuda_runtime"] == torch.version.cuda
    assert info["capability"] == "{}.{}".format(*torch.cuda.get_device_capability(0))
    if shutil.which("nvidia-smi"):
        assert info["driver"], "nvidia-smi is here but the driver version was not read"
    env = environment()
    assert env["gpu"]["name"] == info["name"] and env["versions"]["torch"] == torch.__version__


# ------------------------------------------------------------------------------------------------
# ONNX Runtime's CUDA provider and TensorRT, when installed
# ------------------------------------------------------------------------------------------------

@needs_ort_cuda
def test_onnxruntime_cuda_provider_matches_cpu(dense: dict[str, Any], dvt: dict[str, Any]) -> None:
    from vitc.backends.ort_runner import OrtRunner

    for exported, min_cos in ((dense, 0.9999), (dvt, 0.999)):
        with OrtRunner(exported["onnx"], device="cuda") as gpu, OrtRunner(exported["onnx"], device="cpu") as cpu:
            assert gpu.describe()["providers"][0] == "CUDAExecutionProvider" and gpu.device == "cuda:0"
            x = synthetic_batch(gpu.input_shape, 16, seed=3)
            out, ref = gpu(x), cpu(x)
            assert out.shape == ref.shape and np.isfinite(out).all()
            assert min_cosine(out, ref) >= min_cos  # the CUDA provider may run fp32 matmuls in TF32
            r = measure(gpu, 8, min_iters=3)
            assert r.gpu_compute_ms is None  # ORT's streams are hidden
            assert r.images_per_s == pytest.approx(8 * r.iterations / r.seconds)


@needs_trt
def test_tensorrt_build_and_runner(dense: dict[str, Any], dvt: dict[str, Any], tmp_path: Path) -> None:
    from vitc.backends.ort_runner import OrtRunner
    from vitc.backends.tensorrt.build import build_engine
    from vitc.backends.tensorrt.runner import TensorRTRunner

    for name, exported, min_cos in (("dense", dense, 0.9999), ("dvt", dvt, 0.999)):
        engine = tmp_path / f"{name}.engine"
        side = build_engine(exported["onnx"], engine, min_batch=1, opt_batch=4, max_batch=8)
        assert engine.is_file() and side["precision"] == "fp32"
        with OrtRunner(exported["onnx"], device="cpu") as cpu:
            x = synthetic_batch(cpu.input_shape, 8, seed=4)
            ref = cpu(x)
        with TensorRTRunner(engine) as trt_runner, TensorRTRunner(engine, cuda_graph=True) as graphed:
            out = trt_runner(x)
            assert out.shape == ref.shape and np.isfinite(out).all()
            assert min_cosine(out, ref) >= min_cos  # TensorRT may run fp32 layers in TF32
            for batch in (1, 8, 1):
                xb = x[:batch]
                np.testing.assert_allclose(graphed(xb), trt_runner(xb), rtol=1e-3, atol=1e-4)
            r = measure(graphed, 8, min_iters=5)
            assert r.gpu_compute_ms is not None and r.images_per_s == pytest.approx(8 * r.iterations / r.seconds)
