"""The one bench protocol: statistics, the stopping rule, round-robin order with the GEMM peak inside it,
speedups, one JSON shape for any number of targets, one table, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vitc.backends.base import Runner
from vitc.backends.torch_runner import TorchRunner
from vitc.checks.bench import (
    BENCH_FORMAT,
    CV_WARN,
    BenchSettings,
    Row,
    Stats,
    _add_speedup,
    _row,
    _Timed,
    bench,
    format_bench,
    latency_stats,
)
from vitc.cli import cli
from vitc.core.artifacts import save_model
from vitc.core.errors import UsageError
from vitc.core.flops import model_macs
from vitc.core.models import resolve_model

FAST = ["--min-iters", "3", "--min-seconds", "0", "--warmup-ms", "0", "--device", "cpu", "--no-peak"]
QUICK = BenchSettings(warmup_ms=0, min_iters=3, min_seconds=0, device="cpu", peak=False)


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


class _Fixed:
    """A timed participant with given latencies (no runner): what _row and _add_speedup read."""

    def __init__(self, ms: list[float], gpu: list[float] | None = None) -> None:
        self.host_ms, self._gpu = ms, gpu

    def gpu_ms(self) -> list[float] | None:
        return self._gpu


def test_row_throughput_and_cv_warning():
    nano = _runner("vit-nano")
    steady = _row("a", nano, 32, _Fixed([10.0, 10.0, 10.1, 9.9]))  # type: ignore[arg-type]
    assert steady.images_per_s == pytest.approx(32 * 4 / 0.04) and steady.warning is None
    assert steady.cv == pytest.approx(np.std([10, 10, 10.1, 9.9], ddof=1) / 10.0)
    noisy = _row("a", nano, 8, _Fixed([5.0, 15.0]))  # type: ignore[arg-type]
    assert noisy.cv > CV_WARN and f"> {CV_WARN:.2f}" in (noisy.warning or "") and noisy.cv_of == "latency"
    # GPU compute time, where measured, is what the CV is computed on (as trtexec does)
    gpu = _row("a", nano, 8, _Fixed([5.0, 15.0], gpu=[4.0, 4.0]))  # type: ignore[arg-type]
    assert gpu.cv_of == "gpu_compute" and gpu.cv == 0.0 and gpu.warning is None


def test_speedups_are_reference_over_target():
    ref_ms, ms = [10.0, 12.0, 11.0], [5.0, 6.0, 4.0]
    ref = Row("r", "x", 32, 3, 0.033, 32 * 3 / 0.033, Stats.of(ref_ms))
    row = Row("t", "x", 32, 3, 0.015, 32 * 3 / 0.015, Stats.of(ms))
    _add_speedup(row, ref, ref_ms, ms)
    assert row.speedup == pytest.approx(11.0 / 5.0)
    assert row.speedup_throughput == pytest.approx(0.033 / 0.015)
    assert row.speedup_paired == pytest.approx(2.0)  # median of 2.0, 2.0, 2.75
    assert row.latency_ratio_paired == pytest.approx(0.5)  # median of 0.5, 0.5, 0.364
    assert row.speedup_paired_iqr == [pytest.approx(2.0), pytest.approx(2.375)]
    assert row.speedup_gpu_compute is None


# ---- the protocol ------------------------------------------------------------------------------------

class _Recording(Runner):
    """Delegates to a real runner and logs each timed call, to check the round-robin order."""

    def __init__(self, inner: Runner, tag: str, log: list[str], precision: str | None = None) -> None:
        super().__init__(inner.spec, inner.input_shape, precision or inner.precision, inner.device)
        self.inner, self.tag, self.log = inner, tag, log

    def _infer(self, batch):
        return self.inner(batch)

    def stage(self, batch):
        return self.inner.stage(batch)

    def run_staged(self, staged):
        self.log.append(self.tag)
        return self.inner.run_staged(staged)


def test_stopping_rule_needs_both_iterations_and_seconds():
    runner = _runner("vit-nano")
    by_iters = bench([runner], ["nano"], BenchSettings(batch_sizes=[2], warmup_ms=0, min_iters=7, min_seconds=0, peak=False))
    row = by_iters.row(0, 2)
    assert row.iterations == 7 and row.batch == 2 and by_iters.reference is None and row.speedup is None
    by_time = bench([runner], ["nano"], BenchSettings(batch_sizes=[2], warmup_ms=0, min_iters=1, min_seconds=0.25, peak=False))
    row = by_time.row(0, 2)
    assert row.seconds >= 0.25 and row.iterations >= 1  # it ran until its accumulated latency reached 0.25 s
    assert row.seconds - row.latency_ms.max / 1e3 < 0.25  # and stopped there: before its last iteration it had not
    assert row.images_per_s == pytest.approx(2 * row.iterations / row.seconds)


def test_round_robin_times_every_target_and_the_peak_in_each_round():
    calls: list[str] = []
    runners = [_Recording(_runner("vit-micro"), "R", calls), _Recording(_runner("vit-nano"), "A", calls),
               _Recording(_runner("vit-nano"), "B", calls, precision="int8")]
    settings = BenchSettings(batch_sizes=[8], warmup_ms=0, min_iters=6, min_seconds=0)
    result = bench(runners, ["micro", "nano", "nano-int8"], settings)
    (res,) = result.results
    assert res.rounds == 6 and [r.iterations for r in res.rows] == [6, 6, 6]
    assert calls[-18:] == ["R", "A", "B"] * 6  # round-robin after each one's warm-up
    # one GEMM per precision present, timed in the same rounds; each row's share is of its own precision's GEMM
    peaks = {p.precision: p for p in res.peaks}
    assert set(peaks) == {"fp32", "int8"} and all(p.iterations == 6 and p.gflops for p in peaks.values())
    assert res.rows[1].peak_gflops == peaks["fp32"].gflops and res.rows[2].peak_gflops == peaks["int8"].gflops
    assert res.rows[1].peak_fraction == pytest.approx(res.rows[1].gflops / peaks["fp32"].gflops)
    # the first target is the reference: speedups and MACs ratios are over it
    assert result.reference == "micro" and res.rows[0].speedup is not None
    assert result.targets[1].macs_ratio == pytest.approx(model_macs(runners[1].spec) / model_macs(runners[0].spec))
    assert any("int8" in w for w in result.warnings)  # the targets differ in precision: said
    assert result.environment["versions"]["torch"] == torch.__version__


def test_no_peak_times_no_gemm():
    result = bench([_runner("vit-nano")], ["nano"], BenchSettings(batch_sizes=[1], warmup_ms=0, min_iters=2, min_seconds=0,
                                                                   peak=False))
    assert result.results[0].peaks == [] and result.row(0, 1).peak_fraction is None and result.settings["peak"] is False


def test_one_json_shape_and_one_table_for_any_number_of_targets():
    nano, micro = _runner("vit-nano"), _runner("vit-micro")
    one = bench([nano], ["nano"], QUICK)
    two = bench([micro, nano], ["micro", "nano"], QUICK)
    for result in (one, two):
        d = json.loads(json.dumps(result.to_dict()))
        assert d["format"] == BENCH_FORMAT
        assert set(d) == {"format", "reference", "targets", "results", "settings", "environment", "warnings", "prediction"}
    assert set(one.to_dict()["results"][0]["rows"][0]) == set(two.to_dict()["results"][0]["rows"][1])
    text_one, text_two = format_bench(one), format_bench(two)
    assert "img/s" in text_one and "speedup" not in text_one.splitlines()[-2]
    assert "reference: micro" in text_two and "paired (IQR)" in text_two


def test_settings_are_validated():
    with pytest.raises(UsageError, match="--min-iters"):
        BenchSettings(min_iters=0).validate()
    with pytest.raises(UsageError, match="batch sizes must be >= 1|--batch-sizes must be >= 1"):
        bench([_runner("vit-nano")], ["x"], BenchSettings(batch_sizes=[0]))


def test_timed_participant_records_host_time():
    t = _Timed(_runner("vit-nano"), 2, seed=0)
    ms = t()
    assert t.host_ms == [ms] and ms > 0 and t.gpu_ms() is None


# ---- CLI ---------------------------------------------------------------------------------------------

def test_bench_cli_on_an_artifact_writes_the_same_json_to_report(artifacts, tmp_path):
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(cli, ["bench", artifacts["vit-nano"], "--batch", "1,2", *FAST, "--report", str(out), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert json.loads(out.read_text()) == report
    (target,) = report["targets"]
    assert (report["format"], target["backend"], target["precision"], target["model"]) == (BENCH_FORMAT, "torch", "fp32", "vit-nano")
    assert target["macs"] == model_macs(resolve_model("vit-nano")[1])
    assert [x["batch"] for x in report["results"]] == [1, 2]
    assert all(x["rows"][0]["iterations"] == 3 for x in report["results"])
    env = report["environment"]
    assert env["cpu"] and env["torch_threads"] >= 1 and env["gpu"] is None and "tensorrt" in env["versions"]
    human = CliRunner().invoke(cli, ["bench", artifacts["vit-nano"], "--batch", "2", *FAST])
    assert human.exit_code == 0 and "img/s" in human.stdout and "median ms" in human.stdout


def test_compare_is_the_stacked_bench_of_two(artifacts):
    a, b = artifacts["vit-micro"], artifacts["vit-nano"]
    compare = CliRunner().invoke(cli, ["bench", "--compare", a, b, "--batch", "4", *FAST, "--json"])
    stacked = CliRunner().invoke(cli, ["bench", a, b, "--batch", "4", *FAST, "--json"])
    assert compare.exit_code == 0 and stacked.exit_code == 0, compare.output + stacked.output
    c, s = json.loads(compare.stdout), json.loads(stacked.stdout)
    assert c["reference"] == s["reference"] == a and [t["model"] for t in c["targets"]] == ["vit-micro", "vit-nano"]
    assert set(c["results"][0]["rows"][1]) == set(s["results"][0]["rows"][1])
    assert c["results"][0]["rows"][1]["speedup_paired"] is not None


@pytest.mark.parametrize("args, message", [
    ([], "give at least one TARGET"),
    (["vit-nano", "--compare", "vit-nano", "vit-micro"], "give TARGET... or --compare A B, not both"),
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
