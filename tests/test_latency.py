"""The latency model (`vitc profile`), speed targets and landing on a budget.

Most tests fit the model to probe timings of a known, synthetic cost function, so they check the fit and the
arithmetic exactly; `vitc profile` itself is run for real on vit-nano through the torch backend (the grid, the
JSON, resume and bad input), and through ONNX Runtime in the slow set.
"""

from __future__ import annotations

import json
import statistics
import subprocess

import pytest
import torch

from tests.conftest import VITC, one_error_line, subprocess_env
from vitc.checks.profile import ProfileSettings, fit_latency
from vitc.core.errors import UsageError
from vitc.core.flops import model_macs
from vitc.core.latency import Grid, LatencyModel, interp1, load_latency, monotone, probes
from vitc.core.models import resolve_model, resolve_spec
from vitc.core.spec import BlockSpec, ViTSpec

# ------------------------------------------------------------------------------------------------
# a synthetic device: block(h, m, n) = attention(h, n) + mlp(m, n) + norms(n)
# ------------------------------------------------------------------------------------------------


def _block_ms(h: int, m: int, n: int) -> float:
    return 0.02 * h * n + 4e-4 * h * n * n + 3e-4 * m * n + 0.01 * n


def _fixed_ms(n: int) -> float:
    return 0.3 + 0.002 * n


def _probe_ms(spec: ViTSpec) -> float:
    """The synthetic device's latency of any probe or model spec."""
    n_patch, prefix = spec.num_patches, spec.num_prefix_tokens
    total, prev = _fixed_ms(n_patch + prefix), n_patch
    for b, patches in zip(spec.blocks, spec.keep_schedule()):
        if b.keep_tokens is not None:
            total += 0.004 * (prev + prefix)
        total += _block_ms(b.heads, b.mlp_hidden, patches + prefix)
        prev = patches
    return total


def synthetic_model(name: str = "vit-micro", **grid: int) -> LatencyModel:
    spec = resolve_spec(name)
    settings = ProfileSettings(backend="torch", **grid)
    g = settings.grid(spec)
    measured = [{"key": p.key, "kind": p.kind, "median_ms": _probe_ms(p.spec)} for p in probes(spec, g)]
    return fit_latency(spec, g, measured, settings, {})


# ------------------------------------------------------------------------------------------------
# the fit
# ------------------------------------------------------------------------------------------------


def test_grid_spans_one_token_to_the_full_input_and_one_head_to_all():
    spec = resolve_spec("deit_small_patch16_224")
    g = ProfileSettings().grid(spec)
    assert g.sides[0] == 1 and g.sides[-1] == 14 and len(g.sides) == 6
    assert g.tokens(spec) == [s * s + 1 for s in g.sides] and g.tokens(spec)[-1] == 197
    assert g.heads == [1, 4, 6] and g.mlp == [192, 640, 1088, 1536]
    plan = probes(spec, g)
    assert plan[0].key == "dense" and len(plan) == 1 + 6 * (3 + 2 + 3)
    assert all(p.spec.blocks[0].head_dim == 64 and p.spec.embed_dim == 384 for p in plan)


def test_the_fit_reproduces_an_additive_device_at_grid_points_and_dense_exactly():
    model = synthetic_model()
    spec = model.spec
    assert model.predict(spec)["speedup"] == pytest.approx(1.0, abs=1e-12)
    assert model.dense_ms == pytest.approx(_probe_ms(spec))
    assert model.calibration == pytest.approx(1.0, abs=1e-9)
    for n in model.tokens:
        for h in model.heads:
            for m in model.mlp:
                assert model.block_ms(BlockSpec(h, 16, m), n) == pytest.approx(_block_ms(h, m, n), rel=1e-9)


def test_between_grid_points_the_model_is_close_and_every_table_is_monotone():
    model = synthetic_model()
    for table in (model.attention, model.mlp_table):
        assert monotone(table) == table
        assert all(b >= a for row in table for a, b in zip(row, row[1:]))
    errors = []
    for h in (1, 2, 3, 4):
        for m in (40, 100, 177, 256):
            for n in (7, 30, 50, 65):
                errors.append(abs(model.block_ms(BlockSpec(h, 16, m), n) / _block_ms(h, m, n) - 1))
    assert max(errors) < 0.12 and sum(errors) / len(errors) < 0.04  # the n^2 term is piecewise-linear between 6 points


def test_held_out_compressed_models_are_predicted_within_a_few_percent():
    model = synthetic_model()
    base = model.spec
    shapes = [
        base.replace(blocks=[BlockSpec(h, 16, m) for h, m in zip([1, 2, 3, 4, 2], [30, 100, 200, 256, 77])]),
        base.replace(blocks=[BlockSpec(3, 16, 180, keep_tokens=k if i in (2, 4, 6) else None)
                             for i, k in enumerate([None, None, 45, None, 31, None, 22, None])]),
    ]
    for spec in shapes:
        assert model.predict(spec)["latency_ms"] == pytest.approx(_probe_ms(spec), rel=0.03)


def test_interpolation_extrapolates_linearly_below_the_grid_and_clamps_at_zero():
    assert interp1([1, 3], [2.0, 6.0], 2) == 4.0
    assert interp1([1, 3], [2.0, 6.0], 0) == 0.0
    assert interp1([1, 3], [2.0, 6.0], -5) == 0.0
    assert interp1([1, 3], [2.0, 6.0], 4) == 8.0


def test_a_model_the_profile_cannot_speak_for_is_refused(tmp_path):
    model = synthetic_model()
    other = resolve_spec("vit-nano")
    with pytest.raises(UsageError, match="measured on vit-micro .* vit-nano is embed 32"):
        model.predict(other)
    wider = model.spec.replace(blocks=[BlockSpec(8, 16, 256)] * 8)
    with pytest.raises(UsageError, match="wider than the profile's grid"):
        model.predict(wider)


def test_json_round_trip_and_malformed_files(tmp_path):
    model = synthetic_model()
    path = tmp_path / "lat.json"
    path.write_text(json.dumps(model.to_dict()))
    again = load_latency(path)
    assert again.predict(model.spec)["latency_ms"] == pytest.approx(model.predict(model.spec)["latency_ms"])
    with pytest.raises(UsageError, match="no such latency profile"):
        load_latency(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UsageError, match="not a readable latency profile"):
        load_latency(tmp_path / "bad.json")
    (tmp_path / "foreign.json").write_text('{"format": "something else"}')
    with pytest.raises(UsageError, match="not a vitc latency profile"):
        load_latency(tmp_path / "foreign.json")
    broken = model.to_dict()
    broken["fit"]["attention_ms"] = broken["fit"]["attention_ms"][:-1]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(UsageError, match="do not match the grid"):
        load_latency(tmp_path / "broken.json")


# ------------------------------------------------------------------------------------------------
# UVC: R as a latency fraction, and landing on the budget
# ------------------------------------------------------------------------------------------------


def test_uvc_latency_resource_is_the_predicted_latency_of_the_sliced_model():
    from vitc.methods.uvc.model import BlockMasks
    from vitc.methods.uvc.resource import LatencyResource
    from vitc.methods.uvc.slice import sliced_spec

    model = synthetic_model()
    spec = model.spec
    res = LatencyResource(spec, model)
    depth = spec.depth
    dense = res.ratio(torch.zeros(depth), torch.zeros(depth), torch.zeros(depth), torch.ones(depth))
    assert float(dense) == pytest.approx(1.0, abs=1e-6)
    masks, kept = [], []
    for i in range(depth):
        proj = torch.ones(4 * 16)
        proj[: 16 * (i % 3)] = 0
        mlp = torch.ones(256)
        mlp[: 20 * i] = 0
        masks.append(BlockMasks(proj, mlp))
        kept.append(i not in (3, 6))
    predicted = model.predict(sliced_spec(spec, masks, kept))["latency_ratio"]
    assert res.masked_ratio(masks, kept) == pytest.approx(predicted, rel=1e-5)
    removed = torch.tensor([1.5] * depth, requires_grad=True)
    r = res.ratio(removed, torch.zeros(depth), torch.zeros(depth), torch.ones(depth))
    r.backward()
    assert removed.grad is not None and bool((removed.grad < 0).all())  # fewer heads, less latency


def test_land_gives_back_the_most_important_units_until_R_is_within_5_percent_of_the_budget():
    from vitc.methods.uvc.landing import land
    from vitc.methods.uvc.model import BlockMasks, UVCViT, head_scores, neuron_scores
    from vitc.methods.uvc.resource import ResourceModel

    torch.manual_seed(0)
    vit, spec = resolve_model("vit-micro")
    net = UVCViT(vit)
    with torch.no_grad():  # blocks 4..7 skipped, the kept ones heavily pruned: R far under 0.5
        net.gate_logits[4:] = torch.tensor([1.0, -1.0])
    masks = []
    for blk in vit.blocks:
        _, heads = head_scores(blk, 4, 16)
        proj = torch.zeros(4, 16)
        proj[heads.argmax()] = 1
        mlp = torch.zeros(256)
        mlp[neuron_scores(blk).argsort(descending=True)[:32]] = 1
        masks.append(BlockMasks(proj.reshape(-1), mlp))
    res = ResourceModel(spec)
    before = res.masked_ratio(masks, net.kept_blocks())
    report = land(net, spec, masks, res, 0.5)
    after = res.masked_ratio(masks, net.kept_blocks())
    assert before < 0.3 and report["resource_before"] == before
    assert 0.475 <= after <= 0.5 and report["resource"] == pytest.approx(after)
    # within each block the given-back neurons are the most important removed ones
    for blk, m in zip(vit.blocks[:4], masks[:4]):
        kept = int(m.mlp.sum())
        assert set(torch.nonzero(m.mlp).flatten().tolist()) == set(neuron_scores(blk).argsort(descending=True)[:kept].tolist())
    # the budget is full: the sliced model's MACs agree
    from vitc.methods.uvc.slice import sliced_spec

    assert model_macs(sliced_spec(spec, masks, net.kept_blocks())) / model_macs(spec) == pytest.approx(after, rel=1e-6)


def test_land_revives_a_skipped_block_when_kept_blocks_are_full():
    from vitc.methods.uvc.landing import land
    from vitc.methods.uvc.model import BlockMasks, UVCViT
    from vitc.methods.uvc.resource import ResourceModel

    torch.manual_seed(0)
    vit, spec = resolve_model("vit-micro")
    net = UVCViT(vit)
    with torch.no_grad():  # 3 full blocks kept: R 0.37, budget 0.5
        net.gate_logits[3:] = torch.tensor([1.0, -1.0])
        net.gate_logits[5] = torch.tensor([0.0, -0.1])  # the strongest keep logit among the skipped ones
    masks = [BlockMasks(torch.ones(64), torch.ones(256)) for _ in range(8)]
    res = ResourceModel(spec)
    report = land(net, spec, masks, res, 0.5)
    assert report["restored"]["blocks"] == 1 and net.kept_blocks()[5]
    assert 0.475 <= report["resource"] <= 0.5


def test_uvc_target_needs_a_latency_profile_and_excludes_a_budget(tmp_path):
    from vitc.core.settings import validate
    from vitc.methods.uvc.settings import UVCSettings

    lat = tmp_path / "lat.json"
    lat.write_text(json.dumps(synthetic_model().to_dict()))
    with pytest.raises(UsageError, match="--target-speedup needs --latency"):
        validate(UVCSettings(target_speedup=2.0))
    with pytest.raises(UsageError, match="give --budget or --target-speedup, not both"):
        validate(UVCSettings(target_speedup=2.0, budget=0.4, latency=str(lat)))
    with pytest.raises(UsageError, match=r"give --budget \(a MACs fraction"):
        validate(UVCSettings())
    with pytest.raises(UsageError, match="--latency: no such latency profile: nope.json"):
        validate(UVCSettings(target_speedup=2.0, latency="nope.json"))
    s = validate(UVCSettings(target_speedup=2.0, latency=str(lat)))
    assert s.budget is None and s.resource_budget == 0.5 and s.resource_name == "latency"  # resolved, never rewritten
    named = validate(UVCSettings(latency_budget=0.4, latency=str(lat)))
    assert (named.resource_budget, named.resource_name, named.budget) == (0.4, "latency", None)
    with pytest.raises(UsageError, match="give --budget or --latency-budget, not both"):
        validate(UVCSettings(budget=0.5, latency_budget=0.4))
    with pytest.raises(UsageError, match="--budget is a MACs fraction; with --latency give --latency-budget"):
        validate(UVCSettings(budget=0.5, latency=str(lat)))
    with pytest.raises(UsageError, match="--latency-budget needs --latency"):
        validate(UVCSettings(latency_budget=0.4))


# ------------------------------------------------------------------------------------------------
# DynamicViT: the keep ratio that meets a target
# ------------------------------------------------------------------------------------------------


def test_keep_ratio_for_a_target_lands_just_above_it():
    from vitc.core.token_select import default_stages
    from vitc.methods.dynamicvit.compress import keep_ratio_for_speedup, with_token_selection

    model = synthetic_model()
    spec = model.spec
    stages = default_stages(spec.depth)
    for target in (1.2, 1.5, 2.0):
        choice = keep_ratio_for_speedup(spec, stages, model, target, "vit-micro")
        assert target <= choice["predicted_speedup"] <= 1.05 * target
        assert choice["predicted_speedup"] == pytest.approx(
            model.dense_ms / _probe_ms(with_token_selection(spec, choice["keep_ratio"], stages)), rel=0.03)
        richer = with_token_selection(spec, choice["keep_ratio"] + 0.01, stages)
        assert model.predict(richer)["speedup"] < target or choice["keep_ratio"] + 0.01 > 1
    with pytest.raises(UsageError, match="no keep ratio makes vit-micro 20x faster"):
        keep_ratio_for_speedup(spec, stages, model, 20.0, "vit-micro")


# ------------------------------------------------------------------------------------------------
# vitc profile from the command line
# ------------------------------------------------------------------------------------------------

TINY = ["--token-points", "2", "--head-points", "2", "--mlp-points", "2", "--min-iters", "2", "--min-seconds", "0",
        "--warmup-ms", "0"]


def _profile(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    """``vitc profile ARGS`` run in ``tmp_path`` through the console script."""
    return subprocess.run([*VITC, "profile", *args], capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path)


def _profile_in_process(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    """``vitc profile ARGS`` run in ``tmp_path`` through Click's runner, in this process (no interpreter and torch
    start-up per call); the same result object as :func:`_profile`."""
    import os

    from click.testing import CliRunner

    from vitc.cli import cli

    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        r = CliRunner().invoke(cli, ["profile", *args])
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(["vitc", "profile", *args], r.exit_code, r.stdout, r.stderr)


def test_cli_profile_torch_writes_the_model_with_its_provenance_and_resumes(tmp_path, nano_artifact):
    out = tmp_path / "lat.json"
    res = _profile_in_process(tmp_path, "vit-nano", "--backend", "torch", "--batch-size", "2", *TINY, "-o", str(out), "--json")
    assert res.returncode == 0, res.stderr
    d = json.loads(out.read_text())
    assert d["target"] == {"backend": "torch", "device": "cpu", "precision": "fp32", "batch_size": 2, "threads": None}
    assert d["grid"] == {"tokens": [2, 17], "heads": [1, 2], "mlp": [8, 64]}
    assert len(d["measurements"]) == 1 + 2 * 5 and all(m["median_ms"] > 0 for m in d["measurements"])
    # paired protocol: every probe is its ratio to the reference probe (1 full block, all tokens) on one time base
    reference = statistics.median(m["reference_ms"] for m in d["measurements"])
    assert all(m["median_ms"] == pytest.approx(m["ratio_to_reference"] * reference) for m in d["measurements"])
    assert {m["key"]: m["ratio_to_reference"] for m in d["measurements"]}["ref1@17"] == 1.0
    assert "versions" in d["environment"] and d["environment"]["runner"]["backend"] == "torch"
    assert not (tmp_path / "lat.json.partial.json").exists()
    model = load_latency(out)
    assert model.predict(model.spec)["speedup"] == pytest.approx(1.0)
    assert monotone(model.attention) == model.attention and monotone(model.mlp_table) == model.mlp_table

    # a killed run: the partial file holds what was measured; the next run measures only the rest
    partial = tmp_path / "again.json.partial.json"
    keep = [m for m in d["measurements"] if m["key"] != "dense"][:6]
    from vitc.checks.profile import _fingerprint

    settings = ProfileSettings(backend="torch", batch_size=2, token_points=2, head_points=2, mlp_points=2, min_iters=2,
                               min_seconds=0, warmup_ms=0)
    spec = resolve_spec("vit-nano")
    fp = _fingerprint(spec, settings, Grid([1, 4], [1, 2], [8, 64]))
    partial.write_text(json.dumps(json.loads(json.dumps({"fingerprint": fp, "measurements": keep}))))
    res = _profile_in_process(tmp_path, "vit-nano", "--backend", "torch", "--batch-size", "2", *TINY, "-o", "again.json")
    assert res.returncode == 0, res.stderr
    assert "resuming the profile: 6 probe(s) already measured" in res.stderr
    resumed = {m["key"]: m for m in json.loads((tmp_path / "again.json").read_text())["measurements"]}
    drop = {"median_ms"}  # rescaled by the reference's median over the whole (resumed) profile
    assert all({k: v for k, v in resumed[m["key"]].items() if k not in drop} == {k: v for k, v in m.items() if k not in drop}
               for m in keep) and len(resumed) == 11

    # predictions: the profiled model itself is 1.0x; an artifact of the same architecture too
    res = _profile_in_process(tmp_path, "--predict", str(out), "vit-nano", str(nano_artifact), "--json")
    assert res.returncode == 0, res.stderr
    preds = json.loads(res.stdout)["predictions"]
    assert [p["speedup"] for p in preds] == [pytest.approx(1.0), pytest.approx(1.0)]


def test_cli_profile_unknown_backend_is_one_line_through_the_console_script(tmp_path):
    res = _profile(tmp_path, "vit-nano", "--backend", "nope", "-o", "x.json")
    assert res.returncode == 2 and "Invalid value for '--backend'" in one_error_line(res.stderr)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("args", "message"), [
    (["vit-nano", "--token-points", "1", "-o", "x.json"], "--token-points"),
    (["vit-nano", "-o", "x.txt"], "-o must name a .json file"),
    (["vit-nano"], "missing -o/--out"),
    (["vit-nano", "--precision", "int8", "-o", "x.json"], "--precision int8 needs --calib-data"),
    (["--predict", "missing.json", "vit-nano"], "no such latency profile: missing.json"),
    (["--predict", "x.json"], "--predict needs one or more TARGETs"),
])
def test_cli_profile_bad_input_is_one_line(tmp_path, monkeypatch, args, message):
    from click.testing import CliRunner

    from vitc.cli import cli

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["profile", *args])
    assert res.exit_code == 2, res.output
    assert message in one_error_line(res.output)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_cli_profile_onnxruntime_predicts_held_out_vit_micro_models(tmp_path):
    """Through vitc's ONNX export and ONNX Runtime: predicted vs measured latency of two compressed shapes."""
    out = tmp_path / "lat.json"
    res = _profile(tmp_path, "vit-micro", "--backend", "onnxruntime", "--batch-size", "8", "-o", str(out))
    assert res.returncode == 0, res.stderr
    model = load_latency(out)
    assert model.dense_ms > 0 and len(model.measurements) == 1 + 6 * 8


# ------------------------------------------------------------------------------------------------
# vitc run: a speed target in the YAML
# ------------------------------------------------------------------------------------------------


def test_pipeline_yaml_takes_a_target_beside_a_macs_budget(tmp_path):
    from vitc.pipeline.config import config_from_dict

    lat = tmp_path / "lat.json"
    lat.write_text(json.dumps(synthetic_model().to_dict()))
    cfg = config_from_dict({"model": "vit-micro", "data": "digits", "uvc": {"finetune_epochs": 1, "runs": [
        {"budget": 0.5}, {"target_speedup": 2.0, "latency": str(lat)}]}, "dynamicvit": {"target_speedup": 1.5, "latency": str(lat)}},
        "p.yaml")
    uvc = cfg.methods["uvc"]
    assert [uvc.method.run_name(r.settings) for r in uvc.runs] == ["uvc-0.50", "uvc-x2.00"]
    assert uvc.values == [0.5, "x2.00"]  # a target is never taken for the MACs budget of the same number
    assert uvc.runs[1].settings.resource_budget == 0.5 and uvc.runs[1].settings.resource_name == "latency"
    assert cfg.methods["dynamicvit"].runs[0].settings.target_speedup == 1.5
    with pytest.raises(UsageError, match=r"'uvc.runs\[0\].target_speedup' needs 'uvc.runs\[0\].latency'|target_speedup.*needs.*latency"):
        config_from_dict({"model": "vit-micro", "data": "digits", "uvc": {"runs": [{"target_speedup": 2.0}]}}, "p.yaml")
    with pytest.raises(UsageError, match="no such latency profile: missing.json"):
        config_from_dict({"model": "vit-micro", "data": "digits",
                          "uvc": {"runs": [{"target_speedup": 2.0, "latency": "missing.json"}]}}, "p.yaml")


def test_a_token_target_run_deploys_what_it_trained(tmp_path):
    """A DynamicViT section with a speed target is materialized at the keep ratio its training picks (not the default
    0.7), named by its target; the method resolves the target once, on a copy of the settings."""
    import dataclasses

    from vitc.core.settings import validate
    from vitc.methods import METHODS
    from vitc.methods.dynamicvit.settings import DynamicViTSettings
    from vitc.pipeline.config import config_from_dict
    from vitc.pipeline.plan import Plan

    lat = tmp_path / "lat.json"
    lat.write_text(json.dumps(synthetic_model().to_dict()))
    cfg = config_from_dict({"model": "vit-micro", "data": "digits", "dynamicvit": {"target_speedup": 1.5, "latency": str(lat)}},
                           "p.yaml")
    plan = Plan(cfg, tmp_path / "run")
    stages = {s.name: s for s in plan.build()}
    assert [v.name for v in plan.variants] == ["dense", "dynamicvit-x1.50"]
    assert stages["dynamicvit-x1.50/materialize"].outputs == [tmp_path / "run" / "dynamicvit-x1.50" / "materialized.safetensors"]
    assert not any("keep0.70" in name for name in stages)
    settings = validate(DynamicViTSettings(target_speedup=1.5, latency=str(lat)))
    before = dataclasses.asdict(settings)
    concrete, choice = METHODS["dynamicvit"].resolve(settings, resolve_spec("vit-micro"))
    assert dataclasses.asdict(settings) == before  # the caller's settings still ask for the target
    assert concrete.keep_ratio == choice["keep_ratio"] < 1 and concrete.target_speedup is None
    assert concrete.stages == [2, 4, 6] and choice["predicted_speedup"] >= 1.5


def test_cpu_runtimes_time_budget_splits_the_shortfall_from_the_ideal_speedup(tmp_path):
    """benchmarks.cpu_runtimes --latency: fixed + blocks + token selection add up, as predicted, and the parts'
    time over their ideal (dense ms per MAC x their MACs) adds up to the model's shortfall."""
    from benchmarks.cpu_runtimes import budget_markdown, time_budget
    from benchmarks.shapes import save_shape, with_tokens
    from vitc.core.fileio import write_json

    model = synthetic_model()
    write_json(tmp_path / "lat.json", model.to_dict())
    dense = save_shape(model.spec, tmp_path / "dense.safetensors")
    four = model.spec.replace(blocks=model.spec.blocks[:4])
    combined_spec = with_tokens(four, 0.7)[0]
    combined = save_shape(combined_spec, tmp_path / "combined.safetensors")
    b = time_budget(tmp_path / "lat.json", dense, combined)
    parts = dict(b["parts"])
    total = parts.pop("total")
    for who in ("dense", "combined"):
        assert sum(p[f"{who}_ms"] for p in parts.values()) == pytest.approx(total[f"{who}_ms"])
        assert sum(p[f"{who}_macs"] for p in parts.values()) == total[f"{who}_macs"]
    assert parts["token selection (predictors, TopK, gather)"]["dense_ms"] == 0
    assert parts["token selection (predictors, TopK, gather)"]["combined_ms"] > 0
    assert b["predicted_speedup"] == pytest.approx(model.predict(combined_spec)["speedup"])
    assert b["ideal_speedup"] == pytest.approx(model_macs(model.spec) / model_macs(combined_spec))
    assert sum(p["over_ideal_ms"] for p in parts.values()) == pytest.approx(total["over_ideal_ms"])
    assert "| total |" in budget_markdown(b)
