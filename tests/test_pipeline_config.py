"""The `vitc run` YAML is validated before any work, with the bad key named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vitc.core.errors import UsageError
from vitc.pipeline.config import config_from_dict, load_config

BASE = {"model": "vit-nano", "data": "digits"}


@pytest.mark.parametrize(
    "raw, message",
    [
        ({**BASE, "uvc": {"budget": [0.5]}}, "unknown key 'uvc.budget' (did you mean 'uvc.budgets'?)"),
        ({**BASE, "exprot": {}}, "unknown key 'exprot' (did you mean 'export'?)"),
        ({"data": "digits"}, "missing required key 'model'"),
        ({**BASE, "uvc": {"budgets": [1.5]}}, "'uvc.budgets[0]' must be in (0, 1]"),
        ({**BASE, "dynamicvit": {"keep_ratio": 0}}, "'dynamicvit.keep_ratio' must be in (0, 1]"),
        ({**BASE, "bench": {"backends": ["tvm"]}}, "'bench.backends[0]' must be one of torch, onnxruntime, tensorrt"),
        ({**BASE, "bench": {"batch_sizes": [32, 0]}}, "'bench.batch_sizes[1]' must be >= 1, got 0"),
        ({**BASE, "export": {"opset": 13}}, "'export.opset' must be one of 18, 19, 20, got 13"),
        # vitc export refuses opset 17, so the pipeline must refuse it before the baseline trains
        ({**BASE, "export": {"opset": 17}}, "'export.opset' must be one of 18, 19, 20, got 17"),
        ({**BASE, "baseline": {"epochs": "ten"}}, "'baseline.epochs' must be an integer"),
        ({**BASE, "data": "mnist"}, "unknown data source 'mnist'"),
        ({**BASE, "dynamicvit": {"runs": [{"kepp_ratio": 0.5}]}},
         "unknown key 'dynamicvit.runs[0].kepp_ratio' (did you mean 'dynamicvit.runs[0].keep_ratio'?)"),
        ({**BASE, "dynamicvit": {"runs": []}}, "'dynamicvit.runs' must list at least one run"),
        ({**BASE, "dynamicvit": {"epochs": 2, "runs": [{"keep_ratio": 1.5}]}}, "'dynamicvit.runs[0].keep_ratio' must be in (0, 1]"),
        ({**BASE, "dynamicvit": {"epochs": -1, "runs": [{"keep_ratio": 0.5}]}}, "'dynamicvit.epochs' must be >= 0"),
        ({**BASE, "dynamicvit": {"runs": [{"name": "a b"}]}}, "'dynamicvit.runs[0].name' must be letters, digits"),
        ({**BASE, "dynamicvit": {"runs": [{"materialize": [0]}]}}, "'dynamicvit.runs[0].materialize[0]' must be in (0, 1]"),
        ({**BASE, "uvc": {"budgets": [0.5], "runs": [{}]}}, "unknown key 'uvc.runs'"),
        ({**BASE, "subset": {"train": 10}}, "'subset' applies to fashion-mnist data, not digits"),
        ({**BASE, "subset": {"val": 0}}, "'subset.val' must be >= 1, got 0"),
        ({**BASE, "bench": {"paired": "yes"}}, "'bench.paired' must be true or false"),
        ({**BASE, "targets": ["dense top1 >> 3"]}, "'targets[0]': cannot read the right side '> 3' of 'dense top1 >> 3'"),
    ],
)
def test_bad_yaml_names_the_key(raw, message):
    with pytest.raises(UsageError) as e:
        config_from_dict(raw)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_example_yaml_is_valid(tmp_path):
    example = Path(__file__).resolve().parents[1] / "examples" / "deit_small_imagenet.yaml"
    text = example.read_text().replace("imagefolder:/data/imagenet", "digits")  # the path does not exist here
    p = tmp_path / "x.yaml"
    p.write_text(text)
    cfg = load_config(p)
    uvc, dynamicvit = cfg.methods["uvc"], cfg.methods["dynamicvit"]
    assert uvc.values == [0.5] and uvc.runs[0].settings.finetune_epochs == 120
    assert dynamicvit.runs[0].settings.keep_ratio == 0.7
    both = cfg.methods["uvc+dynamicvit"]
    assert both.parent_value == 0.5 and both.runs[0].settings.keep_ratio == 0.7 and both.materialize == [0.5, 0.7, 0.9]
    assert uvc.values == [0.5]  # the combined run builds on the listed UVC run, no second one
    assert cfg.distributed.nproc_per_node == 8


def test_cli_rejects_misspelled_key_before_any_work(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model: vit-nano\ndata: digits\nbaseline:\n  epoch: 3\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "vitc", "run", str(p), "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {p}: unknown key 'baseline.epoch' (did you mean 'baseline.epochs'?)"
    assert not out.exists()


def test_invalid_yaml_is_one_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("model: [unclosed\n")
    with pytest.raises(UsageError, match="invalid YAML"):
        load_config(p)


@pytest.mark.parametrize("fast", [False, True])
def test_the_demo_is_a_valid_pipeline_with_every_method(fast, tmp_path):
    """`vitc demo` (and --fast) validate as pipeline YAML and plan dense, UVC, DynamicViT at three ratios and
    UVC+DynamicViT at three ratios, each deployed in four formats."""
    import json

    from click.testing import CliRunner

    from vitc.cli import cli

    r = CliRunner().invoke(cli, ["demo", "--dry-run", "--json", "--out", str(tmp_path / "demo"), *(["--fast"] if fast else [])])
    assert r.exit_code == 0, r.output
    names = [s["name"] for s in json.loads(r.stdout)["stages"]]
    budget = "0.70" if fast else "0.50"
    assert names[:7] == ["dense/train", f"uvc-{budget}/compress", f"uvc-{budget}/materialize", "dynamicvit-0.70/compress",
                         "dynamicvit-0.70/materialize", f"uvc-{budget}+dynamicvit-0.70/compress",
                         f"uvc-{budget}+dynamicvit-0.70/materialize"]
    variants = ["dense", f"uvc-{budget}", *(f"dynamicvit-keep{r}" for r in ("0.50", "0.70", "0.90")),
                *(f"uvc-{budget}+dynamicvit-keep{r}" for r in ("0.50", "0.70", "0.90"))]
    for v in variants:
        for step in ("export", "export-fp16", "quantize", "verify-fp32", "verify-fp16", "verify-int8", "eval-onnxruntime-int8"):
            assert f"{v}/{step}" in names, (v, step)
    assert not (tmp_path / "demo").exists() or not any((tmp_path / "demo").iterdir())  # a dry run writes nothing


def _dry_run(tmp_path: Path, raw: dict, *args: str) -> subprocess.CompletedProcess[str]:
    import yaml

    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(raw))
    return subprocess.run([sys.executable, "-m", "vitc", "run", str(p), "--out", str(tmp_path / "out"), "--dry-run",
                           "--json", *args], capture_output=True, text=True)


@pytest.mark.parametrize("args, message", [
    (["--set", "baseline"], "error: --set 'baseline': expected KEY=VALUE, e.g. baseline.epochs=20"),
    (["--set", "baseline.epochs=ten"], "'baseline.epochs' must be an integer"),
    (["--set", "model.x=1"], "error: --set 'model.x=1': 'model' is not a section"),
    (["--set", "uvc.budgets=[0.5, 0.5]"], "'uvc.budgets' lists 0.50 twice"),
])
def test_set_overrides_are_validated_like_the_file(tmp_path: Path, args: list[str], message: str) -> None:
    r = _dry_run(tmp_path, BASE, *args)
    assert r.returncode == 2, r.stdout
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr


def test_set_replaces_keys_and_runs_share_section_settings(tmp_path: Path) -> None:
    import json

    raw = {**BASE, "dynamicvit": {"epochs": 3, "runs": [{"keep_ratio": 0.5}, {"keep_ratio": 0.6, "epochs": 1}]},
           "bench": {"paired": False, "backends": ["onnxruntime"]}}
    r = _dry_run(tmp_path, raw, "--set", "baseline.epochs=2", "--set", "dynamicvit.batch_size=8")
    assert r.returncode == 0, r.stderr
    stages = {s["name"]: s["options"] for s in json.loads(r.stdout)["stages"]}
    assert stages["dense/train"]["epochs"] == 2
    assert (stages["dynamicvit-0.50/compress"]["epochs"], stages["dynamicvit-0.60/compress"]["epochs"]) == (3, 1)
    assert stages["dynamicvit-0.50/compress"]["batch_size"] == stages["dynamicvit-0.60/compress"]["batch_size"] == 8
    # bench.paired false: each compressed format is benched on its own
    assert "paired_with" not in stages["dynamicvit-keep0.50/bench-onnxruntime-fp32"]


def test_two_runs_with_one_name_are_refused(tmp_path: Path) -> None:
    r = _dry_run(tmp_path, {**BASE, "dynamicvit": {"runs": [{"keep_ratio": 0.7}, {"keep_ratio": 0.7, "epochs": 1}]}})
    assert r.returncode == 2
    assert "two stages are named 'dynamicvit-0.70/compress'; give the runs distinct values or names" in r.stderr


def test_a_stage_whose_settings_changed_starts_over_instead_of_resuming(tmp_path: Path) -> None:
    """An interrupted training stage continues from its checkpoint only under the key it was started with."""
    from vitc.core.runs import CHECKPOINT_NAME, Stage, StageRecords, drop_checkpoints

    folder = tmp_path / "dynamicvit-0.70"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / CHECKPOINT_NAME).write_bytes(b"x")
    stage = Stage("dynamicvit-0.70/compress", {"epochs": 2}, [], [folder / "compressed.safetensors"], dict, folder)
    records = StageRecords(tmp_path, resume=True)
    records.start(stage)
    again = StageRecords(tmp_path, resume=True)
    assert not again.changed(stage) and not again.unchanged(stage)  # interrupted, same settings: continue it
    other = Stage(stage.name, {"epochs": 3}, [], stage.outputs, dict, folder)
    assert again.changed(other)
    assert drop_checkpoints(folder) == 1 and not (folder / "sub" / CHECKPOINT_NAME).exists()


def test_a_tune_section_adds_a_tune_stage_with_the_commands_settings(tmp_path: Path) -> None:
    import json

    r = _dry_run(tmp_path, {**BASE, "tune": {"target_speedup": 3, "max_drop": 1.0, "backends": ["onnxruntime"]}})
    assert r.returncode == 0, r.stderr
    stages = {s["name"]: s["options"] for s in json.loads(r.stdout)["stages"]}
    options = stages["tune-x3.00/tune"]
    assert (options["target_speedup"], options["max_drop"], options["backends"]) == (3.0, 1.0, ["onnxruntime"])
    bad = _dry_run(tmp_path, {**BASE, "tune": {"max_drop": 1.0}})
    assert bad.returncode == 2 and "missing required key 'tune.target_speedup'" in bad.stderr
    bad = _dry_run(tmp_path, {**BASE, "tune": {"target_speedup": 0.5}})
    assert bad.returncode == 2 and "'tune.target_speedup' must be > 1, got 0.5" in bad.stderr


def test_every_shipped_yaml_plans_with_the_new_keys_and_old_spellings_still_work(tmp_path: Path) -> None:
    """Every benchmarks/*.yaml and the example plan (`vitc run --dry-run`'s work) with no note: they use the current
    keys; the same file in the old spelling (export.fp16/int8/calib_*, bench.backends) plans to the same stages, one
    note per renamed key. Data outside the repository is swapped for digits."""
    import json

    from tests.test_latency import synthetic_model
    from vitc.pipeline.run import Pipeline

    lat = tmp_path / "lat.json"
    lat.write_text(json.dumps(synthetic_model().to_dict()))
    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "benchmarks").glob("*.yaml")) + [root / "examples" / "deit_small_imagenet.yaml"]
    for path in files:
        sets = ["data=digits", "subset=null"] + (
            [f"uvc.runs=[{{budget: 0.5}}, {{target_speedup: 2.0, latency: {lat}}}]"] if "speed_target" in path.name else [])
        cfg = load_config(path, sets)
        assert cfg.notes == [] or all("adds a" in n for n in cfg.notes), (path.name, cfg.notes)
        assert Pipeline(cfg, tmp_path / path.stem).dry_run()["stages"], path.name
    old = {**BASE, "export": {"fp16": False, "int8": True, "calib_samples": 64, "calib_method": "entropy"},
           "bench": {"backends": ["onnxruntime", "openvino"], "batch_sizes": [8]}}
    new = {**BASE, "deploy": {"backends": ["onnxruntime", "openvino"], "precisions": ["fp32", "int8"]},
           "quantize": {"num_samples": 64, "method": "entropy"}, "bench": {"batch_sizes": [8]}}
    a, b = config_from_dict(old, "old.yaml"), config_from_dict(new, "new.yaml")
    assert (a.deploy, a.quantize, a.bench) == (b.deploy, b.quantize, b.bench)
    assert len(a.notes) == 5 and all("is the old spelling of" in n for n in a.notes) and b.notes == []
    plan = lambda cfg: [s.name for s in Pipeline(cfg, tmp_path / "same").plan()]
    assert plan(a) == plan(b)
    with pytest.raises(UsageError, match="'bench.backends' and 'deploy.backends' are the same setting"):
        config_from_dict({**new, "bench": {"backends": ["onnxruntime"]}}, "both.yaml")


def test_a_tune_section_that_cannot_run_here_is_refused_before_any_stage(tmp_path: Path) -> None:
    r = _dry_run(tmp_path, {**BASE, "tune": {"target_speedup": 3, "backends": ["tensorrt"]}})
    assert r.returncode == 2 and "p.yaml: 'tune.backends' lists tensorrt, which cannot run here" in r.stderr, r.stderr
