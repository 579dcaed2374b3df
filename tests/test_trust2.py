"""Trust, second round: no command writes over one of its own inputs (under any spelling of the path), a
resumed run is the run it claims to be, teachers that do not fit, odd checkpoints and files, Ctrl-C at
start-up, and one-liners that name the right thing. Each case: the exit code, exactly one ``error:`` line,
nothing partial written, and the input file's SHA-256 unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from conftest import VITC, one_error_line, subprocess_env, uvc_nano_artifact

from vitc.cli import cli
from vitc.core.artifacts import save_model
from vitc.core.fileio import file_sha256
from vitc.core.models import resolve_model


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


def fails(result: Any, code: int, message: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    line = one_error_line(result.stderr)
    assert message in line, line
    return line


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp"))


# ---- 1. no command writes over its own input ---------------------------------------------------------------

def _symlink(p: Path) -> str:
    (p.parent / f"link{p.suffix}").symlink_to(p.name)
    return f"link{p.suffix}"


def _hardlink(p: Path) -> str:
    os.link(p, p.parent / f"hard{p.suffix}")
    return f"hard{p.suffix}"


SPELLINGS: dict[str, Callable[[Path], str]] = {
    "same": lambda p: p.name,
    "dot-slash": lambda p: f"./{p.name}",
    "absolute": lambda p: str(p.resolve()),
    "symlink": _symlink,
    "hardlink": _hardlink,
}


def _copy(src: str | Path, dst: Path) -> Path:
    dst.write_bytes(Path(src).read_bytes())
    return dst


def official_checkpoint(path: Path) -> Path:
    """A vit-nano DynamicViT state dict under the official key names (predictors as score_predictor.k)."""
    from vitc.core.token_select import TokenSelect
    from vitc.methods.dynamicvit.compress import attach_predictors

    torch.manual_seed(0)
    dense, spec = resolve_model("vit-nano")
    model, _ = attach_predictors(dense, spec, 0.7, [1, 2, 3])
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("blocks.")}
    block = stage = 0
    for module in model.blocks:  # type: ignore[union-attr]
        if isinstance(module, TokenSelect):
            state.update({f"score_predictor.{stage}.{k}": v for k, v in module.predictor.state_dict().items()})
            stage += 1
        else:
            state.update({f"blocks.{block}.{k}": v for k, v in module.state_dict().items()})
            block += 1
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"model": state}, path)
    return path


@pytest.mark.parametrize("spelling", list(SPELLINGS))
@pytest.mark.parametrize("case", ["materialize", "import", "export", "quantize", "build", "bench"])
def test_a_file_output_never_writes_over_an_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dvt_art: Path,
                                                  nano_artifact: Path, dense: dict, case: str, spelling: str) -> None:
    monkeypatch.chdir(tmp_path)
    source = {"materialize": lambda: _copy(dvt_art, tmp_path / "m.safetensors"),
              "import": lambda: official_checkpoint(tmp_path / "official.safetensors"),
              "export": lambda: _copy(nano_artifact, tmp_path / "m.safetensors"),
              "quantize": lambda: _copy(dense["onnx"], tmp_path / "m.onnx"),
              "build": lambda: _copy(dense["onnx"], tmp_path / "m.onnx"),
              "bench": lambda: _copy(nano_artifact, tmp_path / "m.safetensors")}[case]()
    digest = file_sha256(source)
    out = SPELLINGS[spelling](source)
    args = {"materialize": ["materialize", source.name, "-o", out],
            "import": ["import", "dynamicvit", source.name, "--model", "vit-nano", "--keep-ratio", "0.7", "-o", out],
            "export": ["export", source.name, "-o", out],
            "quantize": ["quantize", source.name, "--data", "digits", "-o", out],
            "build": ["build", source.name, "-o", out],
            "bench": ["bench", source.name, "--batch-sizes", "1", "--report", out]}[case]
    flag = "--report" if case == "bench" else "--out"
    line = fails(invoke(*args), 2, f"{flag} {Path(out)} would write over the input {source.name}")
    assert line.endswith("(the same file); choose another path" if spelling in ("symlink", "hardlink")
                          else f"{source.name}; choose another path"), line
    assert file_sha256(source) == digest and temporaries(tmp_path) == []


@pytest.mark.parametrize("case", ["train-model", "train-checkpoint", "compress-dynamicvit", "compress-uvc"])
def test_a_folder_output_never_writes_over_an_input(tmp_path: Path, nano_artifact: Path, dvt_art: Path,
                                                    case: str) -> None:
    """The files a training command writes into --out are checked against its inputs before any training."""
    run = tmp_path / "run"
    run.mkdir()
    name, args = {
        "train-model": ("model.safetensors", ["train", "--model", run / "model.safetensors", "--data", "digits"]),
        "train-checkpoint": ("checkpoint.pt", ["train", "--model", "vit-nano", "--checkpoint", run / "checkpoint.pt",
                                               "--data", "digits"]),
        "compress-dynamicvit": ("compressed.safetensors", ["compress", "dynamicvit", run / "compressed.safetensors",
                                                           "--data", "digits"]),
        "compress-uvc": ("compressed.safetensors", ["compress", "uvc", run / "compressed.safetensors", "--data",
                                                    "digits", "--budget", "0.5"]),
    }[case]
    source = _copy(nano_artifact, run / name)
    digest = file_sha256(source)
    fails(invoke(*args, "--epochs", "1", "--out", run), 2,
          f"--out {run}: {source} would write over the input {source}; choose another path")
    assert file_sha256(source) == digest and sorted(p.name for p in run.iterdir()) == [name]


def test_every_atomic_write_of_a_command_refuses_its_inputs(tmp_path: Path) -> None:
    """The net under the up-front check: inside protect_inputs, a write onto an input (any spelling) is refused."""
    from vitc.core.errors import UsageError
    from vitc.core.fileio import protect_inputs, write_text

    source = tmp_path / "in.json"
    source.write_text("{}")
    (tmp_path / "alias.json").symlink_to(source)
    with protect_inputs([source]):
        for spelling in (source, tmp_path / "alias.json", tmp_path / "." / "in.json"):
            with pytest.raises(UsageError, match=r"would write over the input .*in\.json"):
                write_text(spelling, "overwritten")
        write_text(tmp_path / "other.json", "fine")
    assert source.read_text() == "{}" and temporaries(tmp_path) == []
    write_text(source, "outside the command it may be rewritten")


# ---- 2. a resumed run is the run it claims to be -----------------------------------------------------------

FAST = ["--data", "synthetic:64", "--batch-size", "32", "--device", "cpu"]


@pytest.mark.parametrize("method, first, changed, message", [
    ("dynamicvit", ["--keep-ratio", "0.7"], ["--keep-ratio", "0.5"],
     "checkpoint.pt was made with keep_ratio 0.7; this run asks keep_ratio 0.5 (start afresh without --resume, or keep 0.7)"),
    ("dynamicvit", ["--lr", "0.002", "--seed", "1"], ["--lr", "0.001", "--seed", "2"],
     "checkpoint.pt was made with lr 0.002 and seed 1; this run asks lr 0.001 and seed 2 (start afresh without --resume, "
     "or keep those)"),
    ("uvc+dynamicvit", ["--keep-ratio", "0.7"], ["--keep-ratio", "0.9"],
     "checkpoint.pt was made with keep_ratio 0.7; this run asks keep_ratio 0.9"),
    ("uvc+dynamicvit", ["--stages", "1,2"], ["--stages", "1,3"], "checkpoint.pt was made with stages 1,2; this run asks stages 1,3"),
    ("uvc", ["--budget", "0.5"], ["--budget", "0.4"],
     "search/checkpoint.pt was made with budget 0.5; this run asks budget 0.4 (start afresh without --resume, or keep 0.5)"),
    ("uvc", ["--budget", "0.5"], ["--budget", "0.5", "--finetune-lr", "1e-5"],
     "search/checkpoint.pt was made with finetune_lr 0.0005; this run asks finetune_lr 1e-05"),
    ("train", ["--batch-size", "32"], ["--batch-size", "16"], "checkpoint.pt was made with batch_size 32; this run asks batch_size 16"),
    ("train", [], ["--data", "synthetic:96"],
     "checkpoint.pt was made with 64 train images; this run has 96 (another --data? start afresh without --resume"),
])
def test_resume_refuses_a_run_with_other_settings(tmp_path: Path, method: str, first: list[str], changed: list[str],
                                                 message: str) -> None:
    out = tmp_path / "run"
    if method == "train":
        base = ["train", "--model", "vit-nano", *FAST, "--warmup-epochs", "0"]
    elif method == "uvc":  # the search does not reach the budget in 2 epochs; its checkpoint is kept all the same
        base = ["compress", "uvc", "vit-nano", *FAST, "--epochs", "2", "--gate-warmup-epochs", "1", "--finetune-epochs", "1"]
    else:
        model = str(uvc_nano_artifact(tmp_path / "uvc.safetensors")) if method == "uvc+dynamicvit" else "vit-nano"
        base = ["compress", method, model, *FAST, "--freeze-epochs", "0"]
    epochs: list[str] = [] if method == "uvc" else ["--epochs", "1"]
    invoke(*base, *first, *epochs, "--out", out)
    ckpt = out / ("search" if method == "uvc" else "") / "checkpoint.pt"
    before = {p: file_sha256(p) for p in out.rglob("*") if p.is_file()}
    assert ckpt in before
    more: list[str] = [] if method == "uvc" else ["--epochs", "2"]
    line = fails(invoke(*base, *changed, *more,
                        "--out", out, "--resume"), 2, message)
    assert line.startswith(f"error: {ckpt}"), line
    assert {p: file_sha256(p) for p in out.rglob("*") if p.is_file()} == before  # nothing written, nothing replaced


def test_resume_may_add_epochs_and_move_device(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["compress", "dynamicvit", "vit-nano", *FAST, "--freeze-epochs", "0", "--keep-ratio", "0.7", "--out", out]
    assert invoke(*args, "--epochs", "1").exit_code == 0
    r = invoke(*args[:-2], "--device", "cpu", "--no-amp", "--epochs", "2", "--out", out, "--resume")
    assert r.exit_code == 0, r.output
    assert "settings changed since the checkpoint: epochs 1 -> 2" in r.stderr
    from vitc.train.loop import load_checkpoint

    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 2 and state["settings"]["keep_ratio"] == 0.7 and state["settings"]["stages"] == [1, 2, 3]


# ---- 3. teachers that do not fit -----------------------------------------------------------------------------


def _dense_like(path: Path, **changes: Any) -> Path:
    from vitc.core.models import SMALL_CONFIGS
    from vitc.core.spec import build_model

    torch.manual_seed(1)
    spec = SMALL_CONFIGS["vit-nano"].replace(**changes)
    return save_model(path, build_model(spec, init_weights=True), spec)


@pytest.mark.parametrize("changes, message", [
    ({"in_chans": 1, "mean": (0.5,), "std": (0.5,)}, "has input channels 1 but the UVC model has 3"),
    ({"img_size": 32}, "has input size 32 but the UVC model has 16"),
    ({"num_classes": 7}, "has classes 7 but the UVC model has 10"),
    ({"embed_dim": 48}, "has embedding width 48 but the UVC model has 32"),
])
def test_a_teacher_that_does_not_fit_is_one_line(tmp_path: Path, uvc_nano: Path, changes: dict, message: str) -> None:
    teacher = _dense_like(tmp_path / "teacher.safetensors", **changes)
    digest = file_sha256(teacher)
    fails(invoke("compress", "uvc+dynamicvit", uvc_nano, *FAST, "--epochs", "1", "--teacher", teacher,
                 "--out", tmp_path / "o"), 2, f"--teacher {teacher} {message}")
    assert file_sha256(teacher) == digest and not (tmp_path / "o" / "compressed.safetensors").exists()


def test_an_onnx_teacher_is_one_line(tmp_path: Path, uvc_nano: Path, dense: dict) -> None:
    fails(invoke("compress", "uvc+dynamicvit", uvc_nano, *FAST, "--epochs", "1", "--teacher", dense["onnx"],
                 "--out", tmp_path / "o"), 2, "is an exported file; the teacher runs in PyTorch during training")


def test_a_teacher_normalised_otherwise_sees_its_own_normalisation(tmp_path: Path, uvc_nano: Path) -> None:
    """The student's batch re-normalised for an ImageNet-normalised teacher equals the teacher's own input."""
    from vitc.core.models import SMALL_CONFIGS
    from vitc.methods.uvc_dynamicvit import resolve_teacher
    from vitc.train.distill import Renormalized

    imagenet = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    student = SMALL_CONFIGS["vit-nano"]
    assert student.mean != imagenet["mean"]
    path = _dense_like(tmp_path / "teacher.safetensors", **imagenet)
    teacher = resolve_teacher(str(path), student).eval()
    pixels = torch.rand(4, 3, 16, 16)
    def norm(mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
        return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)

    assert isinstance(teacher, Renormalized)
    with torch.no_grad():
        got = teacher(norm(student.mean, student.std))
        want = teacher.teacher(norm(imagenet["mean"], imagenet["std"]))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    r = invoke("compress", "uvc+dynamicvit", uvc_nano, *FAST, "--epochs", "1", "--freeze-epochs", "0", "--teacher", path,
               "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    assert (f"--teacher {path} is normalised with mean (0.485, 0.456, 0.406) std (0.229, 0.224, 0.225), the UVC model "
            "with mean (0.5, 0.5, 0.5) std (0.5, 0.5, 0.5): each batch is re-normalised for the teacher") in r.stderr


# ---- 4. odd checkpoints and files -------------------------------------------------------------------------


def _nano_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return resolve_model("vit-nano")[0].state_dict()


@pytest.mark.parametrize("edit, message", [
    (lambda sd: {**sd, 1: torch.zeros(1)}, "has a tensor under the int key 1, not a parameter name"),
    (lambda sd: {**sd, ("head", "bias"): torch.zeros(10)}, "has a tensor under the tuple key ('head', 'bias')"),
    (lambda sd: {**sd, "head.bias": torch.zeros(10, dtype=torch.complex64)},
     ": tensor head.bias holds complex numbers (complex64); a ViT's weights are real"),
])
@pytest.mark.parametrize("command", ["eval", "train"])
def test_an_odd_state_dict_is_one_line(tmp_path: Path, edit: Callable, message: str, command: str) -> None:
    ckpt = tmp_path / "odd.pth"
    torch.save(edit(_nano_state()), ckpt)
    digest = file_sha256(ckpt)
    args = (["eval", "vit-nano", "--data", "digits"] if command == "eval"
            else ["train", "--model", "vit-nano", "--data", "digits", "--epochs", "1", "--out", tmp_path / "t"])
    with _no_warning():
        r = invoke(*args, "--checkpoint", ckpt)
    fails(r, 2, f"{ckpt}{message}" if message.startswith(":") else f"{ckpt} {message}")
    assert file_sha256(ckpt) == digest and not (tmp_path / "t").exists()


class _no_warning:
    def __enter__(self) -> None:
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc: Any) -> None:
        self._cm.__exit__(*exc)


def test_a_complex_tensor_in_an_artifact_is_refused(tmp_path: Path) -> None:
    from vitc.core.errors import CheckFailed

    model, spec = resolve_model("vit-nano")
    model.head.bias.data = torch.zeros(10, dtype=torch.complex64)  # type: ignore[union-attr]
    with pytest.raises(CheckFailed, match="tensor head.bias holds complex numbers"):
        save_model(tmp_path / "c.safetensors", model, spec)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, note", [
    ("{not json", "it was not valid JSON"),
    ("[1, 2]", "it was not a JSON object"),
    ('{"deit_tiny_patch16_224": {"spec": {"name": 3}}, "deit_tiny_distilled_patch16_224": 7}', "2 stale entries"),
])
def test_a_corrupt_or_stale_models_cache_is_rebuilt_with_a_note(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                content: str, note: str) -> None:
    import json

    import timm

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = tmp_path / "vitc" / f"models-timm-{timm.__version__}.json"
    cache.parent.mkdir()
    cache.write_text(content)
    r = invoke("models", "deit_tiny*", "--json")
    assert r.exit_code == 0, r.output
    assert [m["name"] for m in json.loads(r.stdout)["models"]] == ["deit_tiny_distilled_patch16_224", "deit_tiny_patch16_224"]
    notes = [ln for ln in r.stderr.splitlines() if ln.startswith("note:")]
    assert notes == [f"note: rebuilt the model cache {cache} ({note})"], r.stderr
    rebuilt = json.loads(cache.read_text())
    assert "spec" in rebuilt["deit_tiny_patch16_224"]
    again = invoke("models", "deit_tiny*", "--json")  # the rebuilt cache is used quietly
    assert again.exit_code == 0 and "note:" not in again.stderr


@pytest.mark.parametrize("yaml_text, message", [
    ("model: vit-nano\ndata: digits\n? [a, b]\n: 1\n", "line 3: a key is a list; keys are plain names"),
    ("model: vit-nano\n{a: 1}: 2\n", "line 2: a key is a mapping; keys are plain names"),
])
def test_a_yaml_key_that_is_a_list_is_one_line(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml_text)
    fails(invoke("run", path, "--dry-run", "--out", tmp_path / "out"), 2, f"{path}: {message}")
    assert not (tmp_path / "out").exists()


# ---- 6. one-liners that name the right thing ---------------------------------------------------------------


def test_a_zero_class_head_is_named_as_such(tmp_path: Path) -> None:
    state = _nano_state()
    state["head.weight"], state["head.bias"] = torch.zeros(0, 32), torch.zeros(0)
    torch.save(state, tmp_path / "zero.pth")
    fails(invoke("eval", "vit-nano", "--checkpoint", tmp_path / "zero.pth", "--data", "digits"), 2,
          f"{tmp_path / 'zero.pth'} has a 0-class head (head.weight of shape [0, 32]); a classifier needs at least one class")
    official = official_checkpoint(tmp_path / "official.pth")
    sd = torch.load(official)["model"]
    sd["head.weight"], sd["head.bias"] = torch.zeros(0, 32), torch.zeros(0)
    torch.save({"model": sd}, official)
    fails(invoke("import", "dynamicvit", official, "--model", "vit-nano", "--keep-ratio", "0.7", "-o", tmp_path / "o.safetensors"),
          2, f"{official} has a 0-class head (head.weight of shape [0, 32])")
    del state["head.weight"], state["head.bias"]
    torch.save(state, tmp_path / "headless.pth")
    fails(invoke("eval", "vit-nano", "--checkpoint", tmp_path / "headless.pth", "--data", "digits"), 2,
          "has no classifier head (no head.weight, head.bias: saved from a num_classes=0 feature extractor?); the model has 10")
    assert not (tmp_path / "o.safetensors").exists()


def test_import_model_may_be_an_artifact_file(tmp_path: Path, nano_artifact: Path) -> None:
    """--model names the backbone; an existing artifact file gives its architecture (it was 'not an existing file')."""
    official = official_checkpoint(tmp_path / "official.pth")
    r = invoke("import", "dynamicvit", official, "--model", nano_artifact, "--keep-ratio", "0.7", "-o", tmp_path / "o.safetensors")
    assert r.exit_code == 0, r.output
    fails(invoke("import", "dynamicvit", official, "--model", official, "--keep-ratio", "0.7", "-o", tmp_path / "p.safetensors"),
          2, f"{official} is a PyTorch checkpoint (.pt/.pth), not a vitc artifact (.safetensors)")
    assert not (tmp_path / "p.safetensors").exists()


@pytest.mark.parametrize("where", ["checkpoint", "import"])
def test_nan_weights_are_named_by_the_checkpoints_key(tmp_path: Path, where: str) -> None:
    if where == "checkpoint":
        state = _nano_state()
        state["blocks.1.mlp.fc1.weight"][0, 0] = float("nan")
        path = tmp_path / "nan.pth"
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
        r = invoke("eval", "vit-nano", "--checkpoint", path, "--data", "digits")
        key = "module.blocks.1.mlp.fc1.weight"
    else:
        path = official_checkpoint(tmp_path / "official.pth")
        sd = torch.load(path)["model"]
        sd["score_predictor.1.in_conv.1.weight"][0, 0] = float("inf")
        torch.save({"model": sd}, path)
        r = invoke("import", "dynamicvit", path, "--model", "vit-nano", "--keep-ratio", "0.7", "-o", tmp_path / "o.safetensors")
        key = "score_predictor.1.in_conv.1.weight"  # vitc calls it blocks.4.predictor...
    fails(r, 2, f"{path}: tensor {key} has 1 non-finite (NaN/Inf) value")


# ---- 5. Ctrl-C at start-up; a light top level -----------------------------------------------------------------

# Runs the console script's main() after a meta-path hook that, when torch starts importing, sends this process a
# real SIGINT (delivered at the next bytecode, deep inside torch's import); with SWALLOW the hook then catches the
# KeyboardInterrupt itself, as a careless library might, and lets the import finish.
INTERRUPT_DURING_TORCH_IMPORT = """
import os, signal, sys
from vitc.cli import main

class Interrupt:
    fired = False
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not Interrupt.fired:
            Interrupt.fired = True
            try:
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):
                    pass
            except KeyboardInterrupt:
                if os.environ.get("SWALLOW") != "1":
                    raise
        return None

sys.meta_path.insert(0, Interrupt())
sys.argv = ["vitc", *sys.argv[1:]]
main()
"""


@pytest.mark.usefixtures("sigint_reaches_children")
@pytest.mark.parametrize("swallow", ["0", "1"])
def test_an_interrupt_while_torch_imports_is_one_line_and_130(tmp_path: Path, swallow: str) -> None:
    out = tmp_path / "t"
    run = subprocess.run([sys.executable, "-c", INTERRUPT_DURING_TORCH_IMPORT, "train", "--model", "vit-nano", "--data",
                          "digits", "--epochs", "1", "--out", str(out)],
                         capture_output=True, text=True, env=subprocess_env(SWALLOW=swallow), timeout=120)
    assert run.returncode == 130, (run.returncode, run.stderr[-2000:])
    assert one_error_line(run.stderr) == "error: interrupted"
    assert not out.exists()


@pytest.fixture()
def sigint_reaches_children() -> Any:
    """A child inherits an ignored SIGINT (pytest started under nohup or as a background job of a script), and
    Python, then vitc, rightly leave it ignored: for these tests the children get the default disposition (a
    handler set here in the parent is reset to the default by exec)."""
    import signal

    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _wait_for_mark(proc: subprocess.Popen, marks: Path, moment: str, timeout: float = 120) -> None:
    """Until vitc, started with VITC_STARTUP_MARKS=marks, has written ``moment`` there (it reached that moment)."""
    import time

    deadline = time.monotonic() + timeout
    while not (marks.is_file() and moment in marks.read_text().split()):
        assert proc.poll() is None, f"vitc exited (rc {proc.returncode}) before reaching {moment!r}"
        assert time.monotonic() < deadline, f"vitc did not reach {moment!r} in {timeout:.0f} s"
        time.sleep(0.005)


# The moments vitc's start-up marks (vitc.cli: VITC_STARTUP_MARKS): its SIGINT handler is installed and nothing else
# is imported yet; the subcommand's module (torch with it) starts importing; the command is about to run (then
# loads its data, builds the model and trains). The interrupt is sent once the child reached the moment.
@pytest.mark.usefixtures("sigint_reaches_children")
@pytest.mark.parametrize("moment", ["handler", "importing", "imported"])
def test_ctrl_c_in_the_first_seconds_of_a_command_is_one_line_and_130(tmp_path: Path, moment: str) -> None:
    """A real SIGINT at several moments of start-up (interpreter up, torch importing, data loading...)."""
    import signal

    out, marks = tmp_path / "t", tmp_path / "marks"
    proc = subprocess.Popen([*VITC, "train", "--model", "vit-nano", "--data", "digits", "--epochs", "50", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env(VITC_STARTUP_MARKS=str(marks)))
    try:
        _wait_for_mark(proc, marks, moment)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, (proc.returncode, stderr[-2000:])
    assert one_error_line(stderr) == "error: interrupted"
    assert temporaries(tmp_path) == [] and not (out / "model.safetensors").exists()


@pytest.mark.parametrize("argv", [[], ["--version"], ["--help"]])
def test_the_command_lines_top_level_does_not_import_torch(argv: list[str]) -> None:
    """``import vitc.cli``, ``vitc --version`` and ``vitc --help`` stay light (the timing: benchmarks/cli_startup.py)."""
    code = ("import sys\nfrom vitc.cli import main\nsys.argv = ['vitc', *sys.argv[1:]]\n"
            "try:\n    main() if len(sys.argv) > 1 else None\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "heavy = sorted(m for m in ('torch', 'timm', 'onnx', 'onnxruntime', 'numpy') if m in sys.modules)\n"
            "assert not heavy, heavy")
    run = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
