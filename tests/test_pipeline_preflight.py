"""`vitc run` checks what the model spec decides before any stage: token-selection sites past the kept depth,
keep ratios that leave no patch token, teachers that cannot see the student's images — for DynamicViT and
UVC+DynamicViT, in --dry-run and in the real run, with the YAML key named and nothing written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from conftest import exported, one_error_line

from vitc.cli import cli
from vitc.core.artifacts import save_model
from vitc.core.models import resolve_model

BASE: dict[str, Any] = {"model": "vit-nano", "data": "digits", "device": "cpu"}  # 4 blocks, 16 patches


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 32-px dense artifact (vit-micro, the student is 16-px vit-nano) and a real ONNX of vit-nano (the session's)."""
    folder = tmp_path_factory.mktemp("teachers")
    micro = save_model(folder / "micro.safetensors", *resolve_model("vit-micro"))
    nano = exported(tmp_path_factory, "dense")
    return {"micro": micro, "onnx": Path(nano["onnx"]), "nano": Path(nano["artifact"])}


BAD = [
    ({"dynamicvit": {"stages": [1, 4]}},
     "'dynamicvit.stages': block 4 is past the kept depth: vit-nano has at most 4 blocks, so a stage sits before block 1..3"),
    ({"uvc+dynamicvit": {"budget": 0.5, "stages": [2, 5]}},
     "'uvc+dynamicvit.stages': block 5 is past the kept depth: any UVC model of vit-nano has at most 4 blocks"),
    ({"dynamicvit": {"keep_ratio": 0.3}},
     "'dynamicvit.keep_ratio': 0.3 leaves 0 of the 16 patch tokens after stage 3 (floor(16*0.3^3))"),
    ({"dynamicvit": {"keep_ratio": 0.7, "materialize": [0.5, 0.2]}},
     "'dynamicvit.materialize': 0.2 leaves 0 of the 16 patch tokens after stage 2"),
    ({"uvc+dynamicvit": {"budget": 0.5, "keep_ratio": 0.25}},
     "'uvc+dynamicvit.keep_ratio': 0.25 leaves 0 of the 16 patch tokens after stage 3"),
    ({"dynamicvit": {"runs": [{"keep_ratio": 0.7}, {"keep_ratio": 0.3}]}},
     "'dynamicvit.runs[1].keep_ratio': 0.3 leaves 0 of the 16 patch tokens"),
    ({"uvc+dynamicvit": {"budget": 0.5, "teacher": "{micro}"}},
     "'uvc+dynamicvit.teacher': {micro} has input size 32 but the UVC model has 16"),
    ({"uvc+dynamicvit": {"budget": 0.5, "runs": [{"keep_ratio": 0.7}, {"keep_ratio": 0.5, "teacher": "{onnx}"}]}},
     "'uvc+dynamicvit.runs[1].teacher': {onnx} is an ONNX model; the teacher runs in PyTorch while training"),
    ({"uvc": {"budgets": [0.5]}, "targets": ["uvc-0.30 top1 >= dense - 1"]},
     "'targets[0]': no variant 'uvc-0.30' in this run (variants: dense, uvc-0.50)"),
    ({"targets": ["dense[onnx int4] top1 >= 50"]}, "'targets[0]': dense has no 'onnx int4' row"),
    ({"targets": ["dense accuracy >= 50"]}, "'targets[0]': cannot read 'dense accuracy >= 50'"),
]


@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize("edit, message", BAD)
def test_bad_pipeline_is_refused_before_any_stage(edit: dict[str, Any], message: str, dry_run: bool, tmp_path: Path,
                                                 teachers: dict[str, Path]) -> None:
    raw = json.loads(json.dumps({**BASE, **edit}).replace("{micro}", str(teachers["micro"]))
                     .replace("{onnx}", str(teachers["onnx"])))
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    r = invoke("run", path, "--out", out, *(["--dry-run"] if dry_run else []))
    assert r.exit_code == 2, r.output
    line = one_error_line(r.stderr)
    expected = message.replace("{micro}", str(teachers["micro"])).replace("{onnx}", str(teachers["onnx"]))
    assert line.startswith(f"error: {path}: "), line
    assert expected in line, line
    assert not out.exists()  # no stage started: no stages.json, no stage folder


def test_a_teacher_that_fits_and_the_dense_teacher_are_accepted(tmp_path: Path, teachers: dict[str, Path]) -> None:
    raw = {**BASE, "uvc+dynamicvit": {"budget": 0.5, "runs": [
        {"keep_ratio": 0.7, "teacher": str(teachers["nano"])},
        {"keep_ratio": 0.7, "teacher": "dense", "name": "teacher-dense"}]}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    r = invoke("run", path, "--out", tmp_path / "run", "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    stages = {s["name"]: s for s in json.loads(r.stdout)["stages"]}
    assert stages["uvc-0.50+dynamicvit-0.70/compress"]["options"]["teacher"] == str(teachers["nano"])
    # `teacher: dense` is the run's own baseline, and that run has its own folder and variants
    dense = str(tmp_path / "run" / "dense" / "model.safetensors")
    assert stages["uvc-0.50+dynamicvit-0.70-teacher-dense/compress"]["options"]["teacher"] == dense
    assert "uvc-0.50+dynamicvit-keep0.70-teacher-dense/export" in stages


def test_an_unlisted_budget_and_sites_uvc_may_not_keep_are_said_in_dry_run(tmp_path: Path) -> None:
    raw = {**BASE, "uvc": {"budgets": [0.7]}, "uvc+dynamicvit": {"budget": 0.5, "stages": [1, 3]}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    r = invoke("run", path, "--out", tmp_path / "run", "--dry-run")
    assert r.exit_code == 0, r.output
    notes = [ln for ln in r.stdout.splitlines() if ln.startswith("note: ")]
    assert notes == [
        "note: 'uvc+dynamicvit.budget' is 0.5 and uvc.budgets lists 0.7: the run adds a UVC run at budget 0.5 with the "
        "uvc section's settings (30 search + 60 fine-tune epochs)",
        "note: uvc+dynamicvit.stages puts a stage before block 3: the UVC model must keep at least 4 of vit-nano's 4 "
        "blocks, which its search decides (if it keeps fewer, this run fails after that stage)",
    ]
    assert "stage 4/" in r.stdout and "uvc-0.50/compress: run" in r.stdout
