"""Benchmark core: statistics, the trtexec stopping rule, A/B alternation and speedups, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vitc.backends.base import Runner
from vitc.backends.torch_runner import TorchRunner
from vitc.checks.bench import CV_WARN, BenchSettings, batch_result, compare_report, latency_stats, measure, speedups
from vitc.cli import cli
from vitc.core.artifacts import save_model
from vitc.core.errors import UsageError
from vitc.core.flops import model_macs
from vitc.core.models import resolve_model

FAST = ["--min-iters", "3", "--min-seconds", "0", "--warmup-ms", "0", "--device", "cpu"]


def _runner(name: str) -> TorchRunner:
    torch.manual_seed(0)
    return TorchRunner(*resolve_model(name), device="cpu")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    return {name: str(save_model(folder / f"{name}.safetensors", *resolve_model(name))) for name in ("vit-nano", "vit-micro")}


# ---- statistics ----------------------------------------------------------------------------------

def test_latency_stats_of_known_samples():
    s = latency_stats(np.arange(1, 101, dtype=float))  # 1..100 ms
    assert (s["min"], s["max"], s["median"], s["mean"]) == (1.0, 100.0, 50.5, 50.5)
    assert s["p90"] == pytest.approx(90.1) and s["p95"] == pytest.approx(95.05) and s["p99"] == pytest.approx(99.01)
    assert s["std"] == pytest.approx(29.0115, abs=1e-4)
    assert latency_stats([2.0])["std"] == 0.0


def test_batch_result_throughput_and_cv_warning():
    steady = batch_result(32, [10.0, 10.0, 10.1, 9.9], wall_s=0.05)
    assert steady["images_per_s"] == pytest.approx(32 * 4 / 0.05) and steady["warning"] is None
    assert steady["cv"] == pytest.approx(np.std([10, 10, 10.1, 9.9], ddof=1) / 10.0)
    noisy = batch_result(8, [5.0, 15.0], wall_s=0.02)
    assert noisy["cv"] > CV_WARN and f"> {CV_WARN:.2f}" in noisy["warning"] and noisy["cv_of"] == "latency"
    # GPU compute time, where measured, is what the CV is computed on (as trtexec does)
    gpu = batch_result(8, [5.0, 15.0], wall_s=0.02, gpu_ms=[4.0, 4.0])
    assert gpu["cv_of"] == "gpu_compute" and gpu["cv"] == 0.0 and gpu["warning"] is None


def test_speedups_are_b_over_a():
    a = batch_result(32, [10.0, 12.0, 11.0], wall_s=0.033)
    b = batch_result(32, [5.0, 6.0, 4.0], wall_s=0.015)
    s = speedups(a, b, [10.0, 12.0, 11.0], [5.0, 6.0, 4.0])
    assert s["speedup"] == pytest.approx(11.0 / 5.0)
    assert s["speedup_throughput"] == pytest.approx(0.033 / 0.015)
    assert s["speedup_paired"] == pytest.approx(2.0)  # median of 2.0, 2.0, 2.75
    assert s["speedup_gpu_compute"] is None


# ---- timing loop -----------------------------------------------------------------------------------

def test_stopping_rule_needs_both_iterations_and_seconds():
    runner = _runner("vit-nano")
    by_iters = measure(runner, 2, BenchSettings(warmup_ms=0, min_iters=7, min_seconds=0))
    assert by_iters["iterations"] == 7 and by_iters["batch"] == 2
    by_time = measure(runner, 2, BenchSettings(warmup_ms=0, min_iters=1, min_seconds=0.25))
    assert by_time["wall_s"] >= 0.25 and by_time["iterations"] > 1
    assert by_time["images_per_s"] == pytest.approx(2 * by_time["iterations"] / by_time["wall_s"])


class _Recording(Runner):
    """Delegates to a real runner and logs each timed call, to check the A/B order."""

    def __init__(self, inner: Runner, tag: str, log: list[str]) -> None:
        super().__init__(inner.spec, inner.input_shape, inner.precision, inner.device)
        self.inner, self.tag, self.log = inner, tag, log

    def _infer(self, batch):
        return self.inner(batch)

    def stage(self, batch):
        return self.inner.stage(batch)

    def run_staged(self, staged):
        self.log.append(self.tag)
        return self.inner.run_staged(staged)


def test_compare_alternates_and_reports_b_over_a():
    calls: list[str] = []
    micro, nano = _Recording(_runner("vit-micro"), "A", calls), _Recording(_runner("vit-nano"), "B", calls)
    settings = BenchSettings(warmup_ms=0, min_iters=6, min_seconds=0)
    report = compare_report(micro, nano, [8], settings, "vit-micro", "vit-nano")
    (r,) = report["results"]
    assert r["rounds"] == 6 and r["a"]["iterations"] == r["b"]["iterations"] == 6
    assert calls[-12:] == ["A", "B"] * 6  # ABAB after the warm-up of each
    # how much faster B is belongs to benchmarks/ (a wall-clock claim); here: the speedup is A's median over B's
    assert report["macs"]["macs_ratio"] == pytest.approx(model_macs(nano.spec) / model_macs(micro.spec))
    assert r["speedup"] == pytest.approx(r["a"]["latency_ms"]["median"] / r["b"]["latency_ms"]["median"])
    assert r["speedup_paired_iqr"][0] <= r["speedup_paired"] <= r["speedup_paired_iqr"][1]
    assert report["settings"]["order"] == "ABAB" and report["environment"]["versions"]["torch"] == torch.__version__


def test_settings_are_validated():
    with pytest.raises(UsageError, match="--min-iters"):
        BenchSettings(min_iters=0).validate()
    with pytest.raises(UsageError, match="batch sizes must be >= 1"):
        compare_report(_runner("vit-nano"), _runner("vit-nano"), [0], BenchSettings())


# ---- CLI ---------------------------------------------------------------------------------------------

def test_bench_cli_on_an_artifact_writes_the_same_json_to_out(artifacts, tmp_path):
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(cli, ["bench", artifacts["vit-nano"], "--batch", "1,2", *FAST, "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert json.loads(out.read_text()) == report
    assert (report["mode"], report["backend"], report["precision"], report["model"]) == ("bench", "torch", "fp32", "vit-nano")
    assert report["macs"] == model_macs(resolve_model("vit-nano")[1])
    assert [x["batch"] for x in report["results"]] == [1, 2] and all(x["iterations"] == 3 for x in report["results"])
    env = report["environment"]
    assert env["cpu"] and env["torch_threads"] >= 1 and env["gpu"] is None and "tensorrt" in env["versions"]
    human = CliRunner().invoke(cli, ["bench", artifacts["vit-nano"], "--batch", "2", *FAST])
    assert human.exit_code == 0 and "img/s" in human.stdout and "median ms" in human.stdout


def test_bench_cli_compare(artifacts):
    r = CliRunner().invoke(cli, ["bench", "--compare", artifacts["vit-micro"], artifacts["vit-nano"], "--batch", "4", *FAST, "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["mode"] == "compare" and report["a"]["model"] == "vit-micro" and report["b"]["model"] == "vit-nano"
    (res,) = report["results"]
    assert res["batch"] == 4 and res["speedup"] == pytest.approx(res["a"]["latency_ms"]["median"] / res["b"]["latency_ms"]["median"])


@pytest.mark.parametrize("args, message", [
    ([], "give either TARGET or --compare A B"),
    (["vit-nano", "--compare", "vit-nano", "vit-micro"], "give either TARGET or --compare A B"),
    (["vit-nano", "--batch-sizes", "0,8"], "--batch-sizes must be >= 1, got 0"),
    (["vit-nano", "--batch", "0,8"], "--batch must be >= 1, got 0"),  # the old spelling, named as typed
    (["vit-nano", "--precision", "fp16"], "fp16 on the torch backend needs --device cuda"),
    (["vit-nano", "--compile"], "need a CUDA device"),
    (["vit-nano", "--precision", "int8"], "torch precision must be one of"),
])
def test_bench_cli_usage_errors_exit_2(args, message):
    r = CliRunner().invoke(cli, ["bench", *args, "--device", "cpu", "--min-iters", "1", "--min-seconds", "0", "--warmup-ms", "0"])
    assert r.exit_code == 2, r.output
    assert r.stderr.strip() == f"error: {message}" or message in r.stderr


def test_every_new_command_has_help():
    for cmd in ("bench", "build"):
        r = CliRunner().invoke(cli, [cmd, "--help"])
        assert r.exit_code == 0 and "--json" in r.output
