"""Reliability: atomic writes (and an audit of every writer in vitc/), numerical faults, unsafe pickles,
fuzzed ONNX files."""

from __future__ import annotations

import ast
import os
import pickle
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vitc.cli import cli
from vitc.core.data import parse_data
from vitc.core.errors import CheckFailed, UsageError
from vitc.core.fileio import atomic_path, write_json
from vitc.core.models import SMALL_CONFIGS, resolve_model
from vitc.train.loop import CHECKPOINT_NAME, Objective, TrainSettings, fit, load_checkpoint, save_checkpoint

VITC_DIR = Path(__file__).resolve().parents[1] / "vitc"


# --- nothing half-written ----------------------------------------------------------------------


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_exception_while_writing_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "m.bin"
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of it")
        raise RuntimeError("disk on fire")
    assert _leftovers(tmp_path / "out") == []


def test_failed_rewrite_keeps_the_old_file(tmp_path: Path) -> None:
    target = write_json(tmp_path / "metrics.json", {"epoch": 1})
    with pytest.raises(TypeError):
        write_json(target, {"epoch": object()})  # not JSON-serialisable, fails mid-write
    assert target.read_text().strip().startswith("{") and '"epoch": 1' in target.read_text()
    assert _leftovers(tmp_path) == ["metrics.json"]


def test_atomic_file_gets_the_usual_permissions(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        path = write_json(tmp_path / "m.json", {})
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_json_outputs_are_strict(tmp_path: Path) -> None:
    """NaN/Inf would make metrics.json and --json output unreadable for jq and other strict parsers."""
    import json

    import numpy as np

    from vitc.cli.common import emit

    def strict(text: str) -> object:
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))

    obj = {"top1": float("nan"), "rows": [np.float32("inf"), 1.5], "ok": 2}
    assert strict(write_json(tmp_path / "m.json", obj).read_text()) == {"top1": None, "rows": [None, 1.5], "ok": 2}
    import click

    @click.command()
    def show() -> None:
        emit(obj, as_json=True)

    assert strict(CliRunner().invoke(show).stdout) == {"top1": None, "rows": [None, 1.5], "ok": 2}


def test_artifact_and_checkpoint_writers_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    from vitc.core.artifacts import save_model

    model, spec = resolve_model("vit-nano")

    def partial_save(tensors, filename, metadata=None):  # type: ignore[no-untyped-def]
        Path(filename).write_bytes(b"\x00" * 100)
        raise OSError("No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", partial_save)
    with pytest.raises(OSError):
        save_model(tmp_path / "model.safetensors", model, spec)

    def partial_torch_save(obj, f, *a, **k):  # type: ignore[no-untyped-def]
        Path(f).write_bytes(b"PK\x03\x04")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", partial_torch_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / CHECKPOINT_NAME, {"epoch": 1})
    assert _leftovers(tmp_path) == []


# Writers that are not atomic on purpose, each with the reason (checked to still exist).
AUDIT_ALLOWED = {
    ("onnx/io.py", "write_onnx"): "helper for use inside atomic_path; both callers pass the temporary path",
    ("cli/__init__.py", "_mark"): "appends one line to the file $VITC_STARTUP_MARKS names (the start-up Ctrl-C tests' hook)",
}
_WRITER_FUNCS = {"torch.save": 1, "save_file": 1, "safetensors.torch.save_file": 1, "onnx.save": 1, "onnx.save_model": 1,
                 "np.save": 0, "np.savez": 0, "numpy.save": 0, "shutil.copy": 1, "shutil.copyfile": 1, "shutil.copy2": 1,
                 "shutil.move": 1, "shutil.copytree": 1, "os.rename": 1, "torch.onnx.export": 2}
_RECEIVER_METHODS = {"write_text", "write_bytes", "touch"}
_ARG_METHODS = {"savefig", "save", "to_csv"}


def _dotted(node: ast.AST | None) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _write_target(call: ast.Call) -> ast.AST | None:
    """The expression naming the file a call writes, or None if it writes no file."""
    name = _dotted(call.func)
    if name == "open" or (name.endswith(".open") and "safe_open" not in name):
        mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
        writes = isinstance(mode, ast.Constant) and isinstance(mode.value, str) and set(mode.value) & set("wax+")
        return (call.args[0] if call.args else call.func) if writes else None
    if name in _WRITER_FUNCS:
        i = _WRITER_FUNCS[name]
        kw = next((k.value for k in call.keywords if k.arg in ("f", "filename", "dst", "file")), None)
        return call.args[i] if len(call.args) > i else kw
    if isinstance(call.func, ast.Attribute):
        if call.func.attr in _RECEIVER_METHODS:
            return call.func.value
        if call.func.attr in _ARG_METHODS and call.args:
            return call.args[0]
    return None


def audit_direct_writes(root: Path) -> list[str]:
    """``file:line: call`` for every file write in ``root`` not aimed at an ``atomic_path`` temporary
    (or an in-memory buffer), outside vitc/core/fileio.py and AUDIT_ALLOWED."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == "core/fileio.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            target = _write_target(call)
            if target is None:
                continue
            names = {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
            node: ast.AST = call
            safe, func = False, ""
            while node in parents:
                node = parents[node]
                if isinstance(node, (ast.With, ast.AsyncWith)):
                    for item in node.items:
                        if _dotted(getattr(item.context_expr, "func", None)).endswith("atomic_path") and item.optional_vars:
                            safe |= bool(names & {n.id for n in ast.walk(item.optional_vars) if isinstance(n, ast.Name)})
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    func = func or node.name
                    for a in ast.walk(node):  # io.BytesIO() buffers are memory, not files
                        if isinstance(a, ast.Assign) and isinstance(a.value, ast.Call) and _dotted(a.value.func).endswith("BytesIO"):
                            safe |= bool(names & {t.id for t in a.targets if isinstance(t, ast.Name)})
            if not safe and (rel, func) not in AUDIT_ALLOWED:
                found.append(f"vitc/{rel}:{call.lineno} in {func or '<module>'}: {ast.unparse(call)[:90]}")
    return found


def test_audit_finds_direct_writes(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(
        "import torch, json\n"
        "def f(p, obj):\n"
        "    torch.save(obj, p)\n"
        "    with open(p, 'w') as fh:\n"
        "        json.dump(obj, fh)\n"
        "    p.write_text('x')\n"
        "def g(p, obj):\n"
        "    with atomic_path(p) as tmp:\n"
        "        torch.save(obj, tmp)\n"
        "        tmp.write_bytes(b'')\n"
        "    with open(p) as fh:\n"
        "        fh.read()\n"
    )
    assert sorted(int(v.split(":")[1].split()[0]) for v in audit_direct_writes(tmp_path)) == [3, 4, 6]


def test_every_file_vitc_writes_goes_through_atomic_path() -> None:
    assert audit_direct_writes(VITC_DIR) == []


def test_audit_allowlist_is_current() -> None:
    for rel, func in AUDIT_ALLOWED:
        path = VITC_DIR / rel
        assert path.is_file(), f"stale allowlist entry {rel} (no such file)"
        assert f"def {func}(" in path.read_text(encoding="utf-8"), f"stale allowlist entry {rel}:{func}"


# --- numerical faults --------------------------------------------------------------------------


class NaNAt(Objective):
    """Cross-entropy, plus a ``poison`` term that is NaN at one global step."""

    def __init__(self, bad_step: int, value: float = float("nan")) -> None:
        super().__init__(label_smoothing=0.0)
        self.bad_step, self.value = bad_step, value

    def loss(self, model, images, targets, ctx):  # type: ignore[no-untyped-def]
        ce, terms = super().loss(model, images, targets, ctx)
        poison = torch.tensor(self.value if ctx.step == self.bad_step else 0.0)
        return ce + poison, {**terms, "poison": poison}


def _nano_run(tmp_path: Path, objective: Objective, **cfg: object) -> tuple[torch.nn.Module, list]:
    torch.manual_seed(0)
    model, spec = resolve_model("vit-nano")
    data = parse_data("synthetic:32")
    config = TrainSettings(**{"epochs": 2, "batch_size": 8, "warmup_epochs": 0, "device": "cpu", **cfg})  # type: ignore[arg-type]
    return fit(model, objective, data.dataset(spec, "train"), None, config, tmp_path)


@pytest.mark.parametrize("value,shown", [(float("nan"), "poison=nan"), (float("inf"), "poison=inf")])
def test_non_finite_loss_stops_with_epoch_step_term_and_keeps_checkpoint(tmp_path: Path, value: float, shown: str) -> None:
    with pytest.raises(CheckFailed) as e:
        _nano_run(tmp_path, NaNAt(bad_step=5, value=value))  # 4 steps per epoch: epoch 2, step 2
    msg = str(e.value)
    assert f"non-finite loss at epoch 2, step 2: {shown}" in msg and "last good checkpoint" in msg and "\n" not in msg
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_nan_in_first_epoch_says_no_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckFailed, match="epoch 1, step 1: poison=nan; no checkpoint"):
        _nano_run(tmp_path, NaNAt(bad_step=0))
    assert not (tmp_path / CHECKPOINT_NAME).exists()


class RecordGradNorm(Objective):
    def __init__(self) -> None:
        super().__init__(label_smoothing=0.0)
        self.norms: list[float] = []

    def after_step(self, model, ctx):  # type: ignore[no-untyped-def]
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))


def test_max_grad_norm_clips_every_step(tmp_path: Path) -> None:
    free, clipped = RecordGradNorm(), RecordGradNorm()
    _nano_run(tmp_path / "a", free, epochs=1)
    _nano_run(tmp_path / "b", clipped, epochs=1, max_grad_norm=0.05)
    assert min(free.norms) > 0.05  # so the limit below is really binding
    assert max(clipped.norms) <= 0.05 * (1 + 1e-4)


class NaNGradient(Objective):
    """A finite loss whose gradient is NaN (d sqrt(x)/dx at 0 is inf, times 0)."""

    def loss(self, model, images, targets, ctx):  # type: ignore[no-untyped-def]
        ce, terms = super().loss(model, images, targets, ctx)
        return ce + (model.head.weight.sum() * 0).sqrt(), terms


def test_non_finite_gradient_norm_is_caught_when_clipping(tmp_path: Path) -> None:
    with pytest.raises(CheckFailed, match="non-finite gradient norm at epoch 1, step 1"):
        _nano_run(tmp_path, NaNGradient(), max_grad_norm=1.0)


def test_huge_lr_through_the_cli_exits_1_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--model", "vit-nano", "--data", "synthetic:32", "--out", str(out),
                                      "--epochs", "3", "--batch-size", "8", "--lr", "1e30", "--warmup-epochs", "0",
                                      "--device", "cpu"])
    assert result.exit_code == 1, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: non-finite loss at epoch ") and ": ce=" in line
    assert not (out / "model.safetensors").exists()


# --- no code execution from files --------------------------------------------------------------


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def _evil_checkpoint(path: Path, marker: Path, **extra: object) -> Path:
    with open(path, "wb") as fh:  # a plain pickle stream as well as torch's zip format
        torch.save({**extra, "model": _Evil(marker)}, fh)
    return path


def test_evil_pickle_is_refused_by_train_checkpoint(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = _evil_checkpoint(tmp_path / "evil.pth", marker)
    with open(tmp_path / "evil.pkl", "wb") as fh:
        pickle.dump(_Evil(marker), fh)
    for path in (evil, tmp_path / "evil.pkl"):
        result = CliRunner().invoke(cli, ["train", "--model", "vit-nano", "--data", "synthetic:16", "--out",
                                          str(tmp_path / "out"), "--epochs", "1", "--checkpoint", str(path)])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path} was refused: not a plain-weights checkpoint")
    assert not marker.exists()


def test_evil_pickle_is_refused_on_resume(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    out = tmp_path / "out"
    out.mkdir()
    _evil_checkpoint(out / CHECKPOINT_NAME, marker, epoch=1, optimizer={})
    result = CliRunner().invoke(cli, ["train", "--model", "vit-nano", "--data", "synthetic:16", "--out", str(out),
                                      "--epochs", "2", "--batch-size", "8", "--resume"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().startswith(f"error: {out / CHECKPOINT_NAME} was refused") and "\n" not in result.stderr.strip()
    assert not marker.exists()
    assert pickle.loads(pickle.dumps(1)) == 1  # (pickle itself still works in this process)


def test_resume_checkpoint_of_another_model_is_a_usage_error(tmp_path: Path) -> None:
    other, _ = resolve_model("vit-micro")
    save_checkpoint(tmp_path / CHECKPOINT_NAME, {"epoch": 1, "model": other.state_dict(), "optimizer": {}})
    with pytest.raises(UsageError, match="does not match the model"):
        model, spec = resolve_model("vit-nano")
        fit(model, Objective(), parse_data("synthetic:16").dataset(spec, "train"), None,
            TrainSettings(epochs=2, batch_size=8, device="cpu"), tmp_path, resume=True)


# --- fuzzed ONNX files -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["pixels", "w"], ["h"]), helper.make_node("Relu", ["h"], ["logits"])], "g",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.metadata_props.add(key="vitc.spec", value="{}")
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    onnx.save_model(model, str(path))
    return path.read_bytes()


def _load_onnx():  # type: ignore[no-untyped-def]
    from vitc.onnx.io import load_onnx

    return load_onnx


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_load_onnx(tmp_path: Path, onnx_bytes: bytes, data: st.DataObject) -> None:
    """A damaged ONNX either still parses into a valid model (protobuf can lose whole trailing fields
    and stay valid) or is a one-line UsageError — never another exception."""
    import onnx

    load_onnx = _load_onnx()
    assert isinstance(load_onnx(_write(tmp_path, onnx_bytes)), onnx.ModelProto)
    buf = bytearray(onnx_bytes)
    if data.draw(st.booleans()):
        buf = buf[: data.draw(st.integers(0, len(buf) - 1))]
    else:
        for pos in data.draw(st.lists(st.integers(0, len(buf) - 1), min_size=1, max_size=4, unique=True)):
            buf[pos] ^= data.draw(st.integers(1, 255))
    try:
        model = load_onnx(_write(tmp_path, bytes(buf)))
    except UsageError as e:
        assert "\n" not in str(e)
    else:
        assert isinstance(model, onnx.ModelProto) and model.graph.node


def test_truncated_onnx_is_a_usage_error(tmp_path: Path, onnx_bytes: bytes) -> None:
    load_onnx = _load_onnx()
    for cut in (0, 5, len(onnx_bytes) // 2):
        with pytest.raises(UsageError):
            load_onnx(_write(tmp_path, onnx_bytes[:cut]))


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "f.onnx"
    path.write_bytes(data)
    return path


def test_small_configs_are_unchanged() -> None:
    """The resume/DDP/SIGKILL tests depend on these sizes."""
    nano = SMALL_CONFIGS["vit-nano"]
    assert (nano.img_size, nano.patch_size, nano.embed_dim, nano.depth) == (16, 4, 32, 4)
