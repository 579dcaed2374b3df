"""Trust, third round: the newest surfaces — latency profiles (`vitc profile`, `--target-speedup`, `--predict`,
`bench --latency`), the OpenVINO build, and the pipeline keys that use them. Each case: the exit code, exactly one
``error:`` line, nothing partial written, and the inputs' SHA-256 unchanged.

Profiles are fitted by hand to a synthetic device (no measuring), except where resuming `vitc profile` itself is
the point."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import one_error_line

from vitc.checks.profile import ProfileSettings, fit_latency
from vitc.cli import cli
from vitc.core.fileio import file_sha256
from vitc.core.latency import Grid, probes
from vitc.core.models import resolve_spec
from vitc.core.spec import ViTSpec


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


def fails(result: Any, code: int, *messages: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    line = one_error_line(result.stderr)
    assert all(m in line for m in messages), line
    return line


def files(folder: Path) -> dict[Path, str]:
    return {p: file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- hand-made profiles: a synthetic device, fitted exactly as `vitc profile` fits measurements ----------------

def _device_ms(spec: ViTSpec) -> float:
    n_patch, prefix = spec.num_patches, spec.num_prefix_tokens
    total, prev = 0.05 + 0.002 * (n_patch + prefix), n_patch
    for b, patches in zip(spec.blocks, spec.keep_schedule()):
        n = patches + prefix
        if b.keep_tokens is not None:
            total += 0.001 * (prev + prefix)
        total += 0.004 * b.heads * n + 2e-5 * b.mlp_hidden * n + 0.002 * n
        prev = patches
    return total


def deep_nano() -> ViTSpec:
    """vit-nano's width, head size and input, twice as deep: another model whose probes look alike."""
    nano = resolve_spec("vit-nano")
    return nano.replace(name="vit-nano-deep", blocks=nano.blocks * 2)


def write_profile(path: Path, spec: ViTSpec | None = None, *, edit: Any = None, **target: Any) -> Path:
    spec = spec or resolve_spec("vit-nano")
    settings = ProfileSettings(backend="onnxruntime", token_points=3, head_points=2, mlp_points=2)
    grid = settings.grid(spec)
    measured = [{"key": p.key, "kind": p.kind, "median_ms": _device_ms(p.spec)} for p in probes(spec, grid)]
    d = fit_latency(spec, grid, measured, settings, {}).to_dict()
    d["target"].update(target)
    if edit is not None:
        edit(d)
    path.write_text(json.dumps(d))
    return path


@pytest.fixture()
def lat(tmp_path: Path) -> Path:
    return write_profile(tmp_path / "lat.json")


@pytest.fixture()
def deep(tmp_path: Path) -> Path:
    return write_profile(tmp_path / "deep.json", deep_nano())


def _zero(d: dict[str, Any]) -> None:
    fit = d["fit"]
    fit.update(fixed_ms=0.0, calibration=0.0, predictor_ms=[0.0] * len(fit["predictor_ms"]),
               attention_ms=[[0.0] * len(r) for r in fit["attention_ms"]], mlp_ms=[[0.0] * len(r) for r in fit["mlp_ms"]])


def _decreasing(d: dict[str, Any]) -> None:
    d["fit"]["attention_ms"] = [list(reversed(row)) for row in d["fit"]["attention_ms"]]


# ---- 1. a latency model used for what it was not measured on ------------------------------------------------

def test_a_profile_of_a_deeper_model_is_refused_by_every_command_that_reads_one(tmp_path: Path, deep: Path,
                                                                                  dvt_art: Path) -> None:
    before = files(tmp_path) | {dvt_art: file_sha256(dvt_art)}
    what = ("deep.json was measured on vit-nano-deep (8 blocks", "is another model (4 blocks")
    fails(invoke("profile", "--predict", deep, "vit-nano"), 2, *what)
    fails(invoke("materialize", dvt_art, "--target-speedup", "1.2", "--latency", deep, "--out", tmp_path / "m"), 2, *what)
    fast = ["--data", "synthetic:64", "--batch-size", "32", "--device", "cpu", "--epochs", "2"]
    fails(invoke("compress", "dynamicvit", "vit-nano", *fast, "--target-speedup", "1.2", "--latency", deep,
                 "--out", tmp_path / "d"), 2, *what)
    fails(invoke("compress", "uvc", "vit-nano", *fast, "--gate-warmup-epochs", "1", "--target-speedup", "1.2",
                 "--latency", deep, "--out", tmp_path / "u"), 2, *what)  # was exit 1 after the search, checkpoint left
    assert files(tmp_path) | {dvt_art: file_sha256(dvt_art)} == before


def test_a_compressed_artifact_is_checked_against_the_dense_model_it_records(tmp_path: Path, lat: Path, deep: Path) -> None:
    import torch

    from vitc.core.artifacts import save_artifact
    from vitc.core.models import resolve_model
    from vitc.core.provenance import origin
    from vitc.methods.dynamicvit.compress import attach_predictors

    torch.manual_seed(0)
    model, spec = resolve_model("vit-nano")
    dense_origin = origin(spec)
    model, spec = attach_predictors(model, spec, 0.7, [1, 2, 3])
    art = save_artifact(tmp_path / "dvt.safetensors", spec, model.state_dict(), kind="dynamicvit",
                        meta={"keep_ratio": 0.7, "origin": dense_origin})
    fails(invoke("materialize", art, "--target-speedup", "1.05", "--latency", deep, "--out", tmp_path / "m"), 2,
          "deep.json was measured on vit-nano-deep", "was compressed from vit-nano")
    assert not (tmp_path / "m").exists()
    r = invoke("materialize", art, "--target-speedup", "1.05", "--latency", lat, "--out", tmp_path / "m", "--json")
    assert r.exit_code == 0, r.output  # its own dense model's profile is no false alarm
    assert json.loads(r.stdout)["variants"][0]["predicted_speedup"] >= 1.05


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory, dense: dict[str, Any]) -> dict[str, Path]:
    """The dense vit-nano ONNX, and copies claiming INT8 and a static batch of 4 (enough for a profile's checks)."""
    import onnx

    from vitc.onnx.io import META_PRECISION, stamp

    folder = tmp_path_factory.mktemp("onnx")
    proto = onnx.load(dense["onnx"])
    int8 = onnx.ModelProto()
    int8.CopyFrom(proto)
    stamp(int8, {META_PRECISION: "int8"})
    onnx.save(int8, str(folder / "nano.int8.onnx"))
    b4 = onnx.ModelProto()
    b4.CopyFrom(proto)
    b4.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    onnx.save(b4, str(folder / "nano.b4.onnx"))
    return {"fp32": Path(dense["onnx"]), "int8": folder / "nano.int8.onnx", "b4": folder / "nano.b4.onnx"}


@pytest.mark.parametrize("target, profile, message", [
    ("int8", {}, "nano.int8.onnx computes in int8"),
    ("b4", {}, "nano.b4.onnx runs at batch 4"),
    ("fp32", {"backend": "torch"}, "runs on onnxruntime or openvino"),
    ("fp32", {"precision": "fp16"}, "computes in fp32"),
])
def test_predict_refuses_a_file_that_runs_otherwise_than_profiled(tmp_path: Path, onnx_files: dict[str, Path],
                                                                  target: str, profile: dict[str, Any], message: str) -> None:
    lat = write_profile(tmp_path / "lat.json", **profile)
    before = files(tmp_path)
    fails(invoke("profile", "--predict", lat, onnx_files[target]), 2, "lat.json was measured on", message)
    assert files(tmp_path) == before
    if target != "fp32":  # the file the profile was measured for is predicted as ever
        r = invoke("profile", "--predict", write_profile(tmp_path / "ok.json"), onnx_files["fp32"], "--json")
        assert r.exit_code == 0 and json.loads(r.stdout)["predictions"][0]["speedup"] == pytest.approx(1.0)


BENCH = ["--min-iters", "2", "--min-seconds", "0", "--warmup-ms", "0"]


@pytest.mark.parametrize("case, message", [
    ("int8", "nano.int8.onnx computes in int8"),
    ("stacked-int8", "nano.int8.onnx computes in int8"),
    ("batch", "runs at batch 8"),
    ("artifact", "runs on torch"),
    ("torch-profile", "dense.onnx runs on onnxruntime"),
])
def test_bench_latency_refuses_before_measuring(tmp_path: Path, onnx_files: dict[str, Path], nano_artifact: Path,
                                                case: str, message: str) -> None:
    lat = write_profile(tmp_path / "lat.json", **({"backend": "torch"} if case == "torch-profile" else {}))
    report = tmp_path / "report.json"
    targets = {"int8": [onnx_files["int8"]], "stacked-int8": [onnx_files["fp32"], onnx_files["int8"]],
               "batch": [onnx_files["fp32"]], "artifact": [nano_artifact], "torch-profile": [onnx_files["fp32"]]}[case]
    batch = "8" if case == "batch" else "1"
    r = invoke("bench", *targets, *BENCH, "--batch", batch, "--latency", lat, "--report", report)
    fails(r, 2, "lat.json was measured on", message)
    assert "img/s" not in r.stdout and not report.exists()


def test_bench_latency_predicts_what_it_measured(tmp_path: Path, onnx_files: dict[str, Path]) -> None:
    r = invoke("bench", onnx_files["fp32"], *BENCH, "--batch", "1", "--latency", write_profile(tmp_path / "lat.json"), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["results"][0]["rows"][0]["predicted_latency_ms"] > 0


@pytest.mark.parametrize("edit, message", [
    (_decreasing, "fit.attention_ms decreases along an axis"),
    (_zero, "every fitted latency is 0"),
])
def test_an_edited_or_damaged_profile_is_refused_on_load(tmp_path: Path, dvt_art: Path, edit: Any, message: str) -> None:
    bad = write_profile(tmp_path / "bad.json", edit=edit)
    before = files(tmp_path)
    fails(invoke("profile", "--predict", bad, "vit-nano"), 2, "bad.json", message)  # all-zero: ZeroDivisionError before
    fails(invoke("materialize", dvt_art, "--target-speedup", "1.2", "--latency", bad, "--out", tmp_path / "m"), 2, message)
    assert files(tmp_path) == before


# ---- 2. pipelines refused before any stage, not after the dense model trained --------------------------------

@pytest.mark.parametrize("section, message", [
    ({"uvc": {"runs": [{"target_speedup": 1.5, "latency": "deep.json"}]}},
     "'uvc.runs[0].latency': deep.json was measured on vit-nano-deep"),
    ({"dynamicvit": {"target_speedup": 1.05, "latency": "deep.json"}}, "'dynamicvit.latency': deep.json was measured on"),
    ({"uvc": {"runs": [{"target_speedup": 1.5, "latency": "foreign.json"}]}},
     "'uvc.runs[0].latency': foreign.json is not a vitc latency profile"),
    ({"uvc": {"runs": [{"target_speedup": 1.5, "latency": "truncated.json"}]}},
     "'uvc.runs[0].latency': truncated.json is not a readable latency profile"),
    ({"uvc": {"runs": [{"target_speedup": 50, "latency": "lat.json"}]}}, "'uvc.runs[0].target_speedup' 50 is out of reach"),
    ({"uvc": {"budgets": [0.5, 0.01]}}, "'uvc.budgets[1]' 0.01 is out of reach"),
    ({"dynamicvit": {"target_speedup": 50, "latency": "lat.json"}}, "'dynamicvit.target_speedup': no keep ratio makes"),
    ({"uvc": {"budgets": [0.5]}, "uvc+dynamicvit": {"budget": 0.5, "target_speedup": 50, "latency": "lat.json"}},
     "'uvc+dynamicvit.target_speedup': 50 is out of reach"),
    ({"dynamicvit": {"target_speedup": 1.05, "latency": "lat.json", "keep_ratio": 0.5}},
     "give pipe.yaml: 'dynamicvit.keep_ratio' or pipe.yaml: 'dynamicvit.target_speedup', not both"),
    ({"dynamicvit": {"latency": "lat.json"}}, "'dynamicvit.latency' is read for"),
    ({"bench": {"backends": ["torch", "openvino", "openvino"]}}, "'bench.backends' lists openvino twice"),
])
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_pipeline_is_refused_before_its_first_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lat: Path,
                                                      deep: Path, section: dict[str, Any], message: str,
                                                      dry_run: bool) -> None:
    import yaml

    monkeypatch.chdir(tmp_path)
    (tmp_path / "foreign.json").write_text('{"format": "something else"}')
    (tmp_path / "truncated.json").write_text(lat.read_text()[:400])
    (tmp_path / "pipe.yaml").write_text(yaml.safe_dump({"model": "vit-nano", "data": "digits", "out": "run",
                                                        **section}))
    before = files(tmp_path)
    fails(invoke("run", "pipe.yaml", *(["--dry-run"] if dry_run else [])), 2, f"pipe.yaml: {message}" if
          not message.startswith("give") else message)
    assert files(tmp_path) == before and not (tmp_path / "run").exists()


# ---- 3. contradictory options, refused by the settings (CLI and YAML alike) -----------------------------------

@pytest.mark.parametrize("method", ["dynamicvit", "uvc+dynamicvit"])
@pytest.mark.parametrize("args, message", [
    (["--latency", "LAT"], "--latency is read for --target-speedup only"),
    (["--latency", "LAT", "--target-speedup", "1.1", "--keep-ratio", "0.7"], "give --keep-ratio or --target-speedup, not both"),
    (["--target-speedup", "1.1", "--keep-ratio", "0.5", "--latency", "LAT"], "give --keep-ratio or --target-speedup"),
])
def test_contradictory_speed_options_are_refused(tmp_path: Path, lat: Path, nano_artifact: Path, method: str,
                                                 args: list[str], message: str) -> None:
    args = [str(lat) if a == "LAT" else a for a in args]
    fails(invoke("compress", method, nano_artifact, "--data", "synthetic:64", *args, "--out", tmp_path / "out"), 2, message)
    assert not (tmp_path / "out").exists()


def test_keep_ratio_defaults_to_0_7_only_without_a_target(lat: Path) -> None:
    from vitc.core.settings import validate
    from vitc.methods.dynamicvit.settings import DynamicViTSettings

    assert validate(DynamicViTSettings()).keep_ratio == 0.7
    assert validate(DynamicViTSettings(keep_ratio=0.5)).keep_ratio == 0.5
    assert validate(DynamicViTSettings(target_speedup=1.2, latency=str(lat))).keep_ratio is None


# ---- 4. a resume that would mix two runs ---------------------------------------------------------------------

def test_uvc_resume_refuses_a_latency_profile_changed_in_place(tmp_path: Path, lat: Path) -> None:
    out = tmp_path / "run"
    args = ["compress", "uvc", "vit-nano", "--data", "synthetic:64", "--batch-size", "32", "--device", "cpu", "--epochs", "2",
            "--gate-warmup-epochs", "1", "--finetune-epochs", "1", "--latency-budget", "0.9", "--latency", lat, "--out", out]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    old = file_sha256(lat)
    d = json.loads(lat.read_text())
    d["fit"]["dense_ms"] *= 1.25  # measured again, or edited: another resource model under the same name
    lat.write_text(json.dumps(d))
    before = files(out)
    fails(invoke(*args, "--resume"), 2, "search/checkpoint.pt was made with latency_profile", f"sha256 {old[:16]}",
          f"this run asks latency_profile {lat} (sha256 {file_sha256(lat)[:16]})")
    assert files(out) == before


# ---- 5. tracebacks and leftovers -----------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--target-speedup", "50", "--latency", "LAT"], "--target-speedup 50 is out of reach"),
    (["--budget", "0.01"], "--budget 0.01 is out of reach"),
    (["--latency-budget", "0.01", "--latency", "LAT"], "--latency-budget 0.01 is out of reach"),
])
def test_an_unreachable_uvc_budget_is_refused_before_the_search(tmp_path: Path, lat: Path, args: list[str],
                                                                message: str) -> None:
    args = [str(lat) if a == "LAT" else a for a in args]
    line = fails(invoke("compress", "uvc", "vit-nano", "--data", "synthetic:64", "--epochs", "2", "--gate-warmup-epochs",
                        "1", *args, "--out", tmp_path / "out"), 2, message, "one block kept, with one head and one MLP neuron")
    assert not (tmp_path / "out").exists()
    if "target" in message:  # the best reachable speedup is named, and asking for it is accepted by the check
        from vitc.core.latency import load_latency
        from vitc.methods.uvc.resource import LatencyResource, check_reachable

        best = float(line.split("ask for at most ")[1].split("x")[0])
        spec = resolve_spec("vit-nano")
        check_reachable(LatencyResource(spec, load_latency(lat)), spec, 1 / best, best, False, str)


PROFILE = ["vit-nano", "--backend", "torch", "--batch-size", "2", "--token-points", "2", "--head-points", "2",
           "--mlp-points", "2", "--min-iters", "2", "--min-seconds", "0", "--warmup-ms", "0"]


def test_a_resumed_profile_measures_invalid_stored_probes_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vitc.checks.profile import _fingerprint

    monkeypatch.chdir(tmp_path)
    settings = ProfileSettings(backend="torch", batch_size=2, token_points=2, head_points=2, mlp_points=2, min_iters=2,
                               min_seconds=0, warmup_ms=0)
    fp = json.loads(json.dumps(_fingerprint(resolve_spec("vit-nano"), settings, Grid([1, 4], [1, 2], [8, 64]))))

    def probe(key: str, ratio: Any, reference: Any = 0.05) -> dict[str, Any]:
        return {"key": key, "kind": key.split("@", maxsplit=1)[0], "ratio_to_reference": ratio, "reference_ms": reference}

    stored = [probe("ref3@17", 2.9), probe("heads1@17", 1.6), probe("mlp8@17", "oops"), probe("ref1@2", math.nan),
              probe("ref3@2", 0.9, -1.0), "junk"]
    (tmp_path / "lat.json.partial.json").write_text(json.dumps({"fingerprint": fp, "measurements": stored}))
    import socket
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = tmp_path / f".vitc-profile-{gone.pid}@{socket.gethostname()}-abcdefgh"  # a run killed outright (SIGKILL)
    stale.mkdir()
    (stale / "probe.onnx").write_bytes(b"half-written")
    r = invoke("profile", *PROFILE, "-o", "lat.json")
    assert r.exit_code == 0, r.output  # was a TypeError (string) or a refused fit (NaN, negative)
    assert "4 stored probe(s) are not valid timings" in r.stderr and "resuming the profile: 2 probe(s)" in r.stderr
    got = {m["key"]: m for m in json.loads((tmp_path / "lat.json").read_text())["measurements"]}
    assert got["ref3@17"]["ratio_to_reference"] == 2.9 and got["heads1@17"]["ratio_to_reference"] == 1.6
    assert all(math.isfinite(got[k]["ratio_to_reference"]) and got[k]["reference_ms"] > 0 for k in ("mlp8@17", "ref1@2", "ref3@2"))
    assert not (tmp_path / "lat.json.partial.json").exists() and not stale.exists()


def test_a_probe_cache_that_cannot_be_made_is_one_line_before_any_probe(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("not a folder")
    fails(invoke("profile", *PROFILE, "--probe-cache", "file/cache", "-o", "lat.json"), 2,
          "--probe-cache: cannot create file/cache: file is a file")  # was a traceback after the first probe
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("cache", ["lat.json", "./lat.json.partial.json"])
def test_a_probe_cache_on_the_profiles_own_path_is_refused_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     cache: str) -> None:
    monkeypatch.chdir(tmp_path)  # was: measured every probe, then left the cache folder and the partial file
    fails(invoke("profile", *PROFILE, "--probe-cache", cache, "-o", "lat.json"), 2, f"--probe-cache {Path(cache)}",
          "is the profile's own path")
    assert list(tmp_path.iterdir()) == []


def test_openvino_build_whose_bin_path_is_a_folder_is_one_line(tmp_path: Path, dense: dict[str, Any]) -> None:
    (tmp_path / "m.bin").mkdir()
    fails(invoke("build", dense["onnx"], "--backend", "openvino", "--out", tmp_path / "m.xml"), 2,
          "m.bin (beside --out m.xml) is a folder")  # was IsADirectoryError after compiling
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin"]


def test_a_failed_openvino_build_leaves_no_cache_or_folders_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   dense: dict[str, Any]) -> None:
    """A bf16 (or fp16) build this CPU cannot run: OpenVINO has already made the cache folder and a blob."""
    import vitc.backends.openvino_runner as ovr
    from vitc.core.errors import UsageError

    class NoBf16:
        def __init__(self, path: Any, precision: Any = None, cache_dir: Any = None, **_: Any) -> None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            (Path(cache_dir) / "123.blob").write_bytes(b"compiled")
            raise UsageError(f"this CPU runs OpenVINO at f32, not the bf16 asked for ({precision})")

    monkeypatch.setattr(ovr, "OpenVinoRunner", NoBf16)
    fails(invoke("build", dense["onnx"], "--backend", "openvino", "--inference-precision", "bf16",
                 "--out", tmp_path / "sub" / "dir" / "m.xml"), 2, "not the bf16 asked for")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "ov_cache").mkdir()  # a cache that was there before keeps what it had, and only that
    (tmp_path / "ov_cache" / "old.blob").write_bytes(b"old")
    fails(invoke("build", dense["onnx"], "--backend", "openvino", "--inference-precision", "bf16",
                 "--out", tmp_path / "m.xml"), 2, "not the bf16 asked for")
    assert files(tmp_path) == {tmp_path / "ov_cache" / "old.blob": file_sha256(tmp_path / "ov_cache" / "old.blob")}


@pytest.mark.parametrize("cache", ["m.xml", "m.bin"])
def test_an_openvino_cache_on_the_irs_own_path_is_refused(tmp_path: Path, dense: dict[str, Any], cache: str) -> None:
    fails(invoke("build", dense["onnx"], "--backend", "openvino", "--cache-dir", tmp_path / cache, "--out", tmp_path / "m.xml"),
          2, "is the IR's own path")  # m.xml: IsADirectoryError; m.bin: an IR recording a cache that is its weights
    assert list(tmp_path.iterdir()) == []


# ---- the new options, with values they cannot mean -----------------------------------------------------------

@pytest.mark.parametrize("value", ["nan", "inf"])
def test_materialize_target_speedup_must_be_finite(tmp_path: Path, lat: Path, dvt_art: Path, value: str) -> None:
    fails(invoke("materialize", dvt_art, "--target-speedup", value, "--latency", lat, "--out", tmp_path / "m"), 2,
          f"--target-speedup must be a finite number > 1, got {value}")  # nan: an error about keep ratio 0.39685
    assert not (tmp_path / "m").exists()


def test_quantize_percentile_applies_to_the_percentile_method_only(tmp_path: Path, dense: dict[str, Any]) -> None:
    from vitc.core.errors import UsageError
    from vitc.core.settings import validate
    from vitc.onnx.quantize import quantize_onnx
    from vitc.onnx.settings import QuantizeSettings

    fails(invoke("quantize", dense["onnx"], "--data", "digits", "--percentile", "99", "--out", tmp_path / "q.onnx"), 2,
          "--percentile applies to --method percentile only (this run calibrates with minmax)")  # was silently ignored
    with pytest.raises(UsageError, match="applies to --method percentile only"):
        quantize_onnx(dense["onnx"], "digits", tmp_path / "q.onnx", method="entropy", percentile=99.9)
    assert list(tmp_path.iterdir()) == []
    assert validate(QuantizeSettings(data="digits", method="percentile")).percentile == 99.999
    assert validate(QuantizeSettings(data="digits")).percentile is None
