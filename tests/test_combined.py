"""UVC + DynamicViT as one method: token selection on a UVC-pruned model, deployed like any other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import one_error_line, uvc_nano_artifact

from vitc.cli import cli
from vitc.core.artifacts import read_header, save_model
from vitc.core.flops import model_macs
from vitc.core.models import SMALL_CONFIGS, resolve_model
from vitc.methods import METHODS
from vitc.pipeline.config import config_from_dict
from vitc.pipeline.run import Pipeline


@pytest.fixture(scope="module")
def combined(tmp_path_factory: pytest.TempPathFactory, uvc_nano: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("combined")
    uvc = uvc_nano
    out = root / "run"
    r = CliRunner().invoke(cli, ["compress", "uvc+dynamicvit", str(uvc), "--data", "digits", "--keep-ratio", "0.7",
                                 "--epochs", "1", "--freeze-epochs", "0", "--batch-size", "128", "--out", str(out),
                                 "--json"])
    assert r.exit_code == 0, r.output
    return {"uvc": uvc, "out": out, "artifact": out / "compressed.safetensors", "result": json.loads(r.stdout)}


def test_the_combined_artifact_prunes_structure_and_tokens(combined: dict) -> None:
    spec, kind, meta = read_header(combined["artifact"])
    assert kind == "uvc+dynamicvit"
    assert [b.heads for b in spec.blocks] == [1] * 4 and [b.mlp_hidden for b in spec.blocks] == [32] * 4  # UVC's cut
    assert [i for i, b in enumerate(spec.blocks) if b.keep_tokens] == [1, 2, 3]  # 1/4, 1/2, 3/4 of the kept depth
    dense_macs = model_macs(SMALL_CONFIGS["vit-nano"])
    r = combined["result"]
    assert meta["origin"]["macs"] == dense_macs and meta["origin"]["name"] == "vit-nano"
    assert r["macs_vs_origin"] == pytest.approx(model_macs(spec) / dense_macs)
    assert r["macs_vs_input"] == pytest.approx(model_macs(spec) / model_macs(spec.without_token_selection()))
    assert r["macs_vs_origin"] < r["macs_vs_input"] < 1  # the savings multiply
    assert meta["provenance"]["parent"]["kind"] == "uvc" and meta["uvc"]["budget"] == 0.6


def test_info_shows_both_compressions_against_the_dense_model(combined: dict) -> None:
    r = CliRunner().invoke(cli, ["info", str(combined["artifact"]), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert [(b["heads"], b["mlp_hidden"]) for b in info["blocks"]] == [(1, 32)] * 4
    assert [b["tokens"] for b in info["blocks"]] == [17, 12, 8, 6]  # tokens entering each block (prefix included)
    assert info["macs_vs_origin"] == pytest.approx(info["macs"] / model_macs(SMALL_CONFIGS["vit-nano"]))
    text = CliRunner().invoke(cli, ["info", str(combined["artifact"])]).stdout
    assert "vs the original dense vit-nano: MACs" in text and "(uvc+dynamicvit)" in text


def test_materialize_export_verify_and_eval_like_any_other(combined: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["materialize", str(combined["artifact"]), "--keep-ratios", "0.5,0.9", "-o", str(tmp_path),
                            "--json"])
    assert r.exit_code == 0, r.output
    variants = json.loads(r.stdout)["variants"]
    assert [v["keep_tokens"] for v in variants] == [[8, 4, 2], [14, 12, 11]]
    assert all(v["macs_ratio_origin"] < v["macs_ratio"] for v in variants)
    onnx = tmp_path / "m.onnx"
    r = runner.invoke(cli, ["export", variants[0]["artifact"], "-o", str(onnx), "--json"])
    assert r.exit_code == 0, r.output
    exported = json.loads(r.stdout)
    assert exported["trt_ready"] and [t["k"] for t in exported["topk"]] == [8, 4, 2] and exported["verify"]["passed"]
    r = runner.invoke(cli, ["verify", str(onnx), "--against", str(combined["artifact"]), "--data", "digits",
                            "--batches", "2", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["passed"], r.output
    r = runner.invoke(cli, ["eval", str(combined["artifact"]), "--data", "digits", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["top1"] == pytest.approx(combined["result"]["val_top1"])


def test_bad_inputs_are_one_line(combined: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["--data", "digits", "--epochs", "1", "--out", str(tmp_path / "x")]
    dense = save_model(tmp_path / "dense.safetensors", *resolve_model("vit-nano"))
    r = runner.invoke(cli, ["compress", "uvc+dynamicvit", str(dense), *args])
    assert r.exit_code == 2 and "is not a UVC model" in one_error_line(r.output)
    r = runner.invoke(cli, ["compress", "uvc+dynamicvit", "vit-nano", *args])
    assert r.exit_code == 2 and "is not an artifact file" in one_error_line(r.output)
    r = runner.invoke(cli, ["compress", "uvc+dynamicvit", str(combined["uvc"]), "--teacher", "vit-micro", *args])
    assert r.exit_code == 2 and "--teacher vit-micro has input size 32 but the UVC model has 16" in one_error_line(r.output)
    assert not (tmp_path / "x" / "compressed.safetensors").exists()


@pytest.mark.parametrize("skip, expect", [((0, 3), [1]), ((0, 1, 3), None)])
def test_a_shallow_uvc_model_gets_fewer_stages_or_one_line(tmp_path: Path, skip: tuple[int, ...],
                                                           expect: list[int] | None) -> None:
    uvc = uvc_nano_artifact(tmp_path / "uvc.safetensors", skip=skip)
    r = CliRunner().invoke(cli, ["compress", "uvc+dynamicvit", str(uvc), "--data", "digits", "--epochs", "1",
                                 "--batch-size", "128", "--out", str(tmp_path / "o"), "--json"])
    if expect is None:  # one block left: no place between two blocks for a predictor
        assert r.exit_code == 2 and "has 1 block: a token-selection stage sits between two blocks" in one_error_line(r.output)
        return
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["stages"] == expect


def test_the_dense_model_can_be_the_teacher(combined: dict, tmp_path: Path) -> None:
    dense = save_model(tmp_path / "dense.safetensors", *resolve_model("vit-nano"))
    r = CliRunner().invoke(cli, ["compress", "uvc+dynamicvit", str(combined["uvc"]), "--data", "digits", "--teacher",
                                 str(dense), "--epochs", "1", "--batch-size", "128", "--out", str(tmp_path / "t"),
                                 "--json"])
    assert r.exit_code == 0, r.output
    assert read_header(tmp_path / "t" / "compressed.safetensors")[2]["teacher"] == str(dense)


@pytest.mark.parametrize("uvc_section, expect", [
    (None, ["uvc-0.40/compress", "uvc-0.40+dynamicvit-0.70/compress"]),  # the parent run is added
    ({"budgets": [0.5, 0.4], "epochs": 4}, ["uvc-0.50/compress", "uvc-0.40/compress", "uvc-0.40+dynamicvit-0.70/compress"]),
    ({"budgets": [0.5], "epochs": 4}, ["uvc-0.50/compress", "uvc-0.40/compress", "uvc-0.40+dynamicvit-0.70/compress"]),
])
def test_the_pipeline_builds_on_the_uvc_run_with_that_budget(uvc_section: dict | None, expect: list[str]) -> None:
    raw = {"model": "vit-nano", "data": "digits", "uvc+dynamicvit": {"budget": 0.4, "keep_ratio": 0.7}}
    if uvc_section:
        raw["uvc"] = uvc_section
    cfg = config_from_dict(raw)
    stages = Pipeline(cfg, Path("unused")).plan()
    assert [s.name for s in stages if s.name.endswith("/compress")] == expect
    added = next(r.settings for r in cfg.methods["uvc"].runs if r.settings.budget == 0.4)
    assert added.epochs == (uvc_section or {}).get("epochs", METHODS["uvc"].settings(budget=0.4).epochs)
    combined = next(s for s in stages if s.name == "uvc-0.40+dynamicvit-0.70/compress")
    assert combined.inputs == [Path("unused/uvc-0.40/materialized.safetensors")]


@pytest.mark.parametrize("section, message", [
    ({"keep_ratio": 0.7}, "'uvc+dynamicvit.budget' is required"),
    ({"budget": 1.4}, "'uvc+dynamicvit.budget' must be in (0, 1], got 1.4"),
    ({"budget": 0.5, "budgets": [0.3]}, "unknown key 'uvc+dynamicvit.budgets' (did you mean 'uvc+dynamicvit.budget'?)"),
    ({"budget": 0.5, "teacher": "no-such-model"}, "'uvc+dynamicvit.teacher': unknown model 'no-such-model'"),
    ({"budget": 0.5, "teacher": "missing/dense.safetensors"}, "'uvc+dynamicvit.teacher': no such file"),
])
def test_a_bad_section_fails_before_any_work(section: dict, message: str) -> None:
    from vitc.core.errors import UsageError

    with pytest.raises(UsageError) as e:
        config_from_dict({"model": "vit-nano", "data": "digits", "uvc+dynamicvit": section})
    assert message in str(e.value)
