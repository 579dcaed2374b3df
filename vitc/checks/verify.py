"""``vitc verify``: ONNX Runtime vs PyTorch on the same inputs, reported the Polygraphy way.

Both backends see the same batches — seeded random images (uniform [0, 1) pixels, normalised with
the model's mean/std) or real images from a data source's val split. Over all logits:

* abs error |onnx − torch| and rel error abs / |torch| (zeros in the reference get 2.2e-16, as in
  Polygraphy): max, mean, median, and the p99 of the abs error;
* per-image cosine similarity of the logit vectors (mean and min) and top-1 agreement (%);
* non-finite outputs (NaN/Inf), which always fail;
* the minimum tolerance that would pass: the chosen statistic of the abs and of the rel error
  (either one alone suffices, since a check fails only when both are exceeded).

PASS/FAIL follows Polygraphy's ``--check-error-stat``: ``elemwise`` fails if any element exceeds
both atol and rtol; ``mean``/``median``/``max`` fail if that statistic of the abs error exceeds atol
and that of the rel error exceeds rtol. ``cosine`` fails if 1 − mean cosine similarity > atol.

Defaults by the ONNX's precision: fp32 atol 1e-4, rtol 1e-3, elemwise (PyTorch↔ORT convention
for FP32 ViTs); fp16 1e-2/1e-2, mean (NVIDIA's FP16 transformer parity recipe); int8 ``cosine``
with atol 1e-2 (mean cosine >= 0.99). INT8 Q/DQ error is quantization noise proportional to each
activation's range, so element tolerances would depend on each model's logit scale; cosine is
scale-free, and Polygraphy's own distance check uses it (0.997 at higher precision). Whether INT8
is good enough is finally an accuracy question: measure it with ``vitc eval model.int8.onnx``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vitc.backends import BACKENDS, REFERENCE_BACKEND
from vitc.checks.settings import STATS, VerifySettings
from vitc.core.errors import UsageError
from vitc.core.progress import progress
from vitc.onnx.source import Deployable, load_deployable

EPSILON = 2.220446049250313e-16
DEFAULT_TOLERANCES: dict[str, tuple[float, float, str]] = {
    "fp32": (1e-4, 1e-3, "elemwise"),
    "fp16": (1e-2, 1e-2, "mean"),
    "bf16": (1e-2, 1e-2, "mean"),
    "int8": (1e-2, 0.0, "cosine"),
}
RANDOM_BATCHES = 4  # random-input batches when ``batches`` is not given
# Token-selection models. Which tokens win near a tie at the K-th score is not stable under rounding
# (on digits, with many near-identical blank patches, fp16 swaps some kept token on 16-30% of images,
# mostly one blank patch for another; int8 on most images), so the kept sets are reported, not required
# to match. What is judged is the swaps' effect on the decision, measured in fp32 PyTorch (the model on
# the ONNX's kept tokens vs on its own): it may change the top-1 on at most 1% of images, and the check
# fails when the count is significantly above that (one-sided exact binomial test, p < 0.05), so an
# acceptable model does not fail by the luck of a 32-image sample. The precision's own noise on the
# logits is judged by the tolerance, as for any model.
MIN_SELECTION_TOP1_AGREEMENT = 99.0
SELECTION_SIGNIFICANCE = 0.05


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how likely k or more changes are at a true rate p."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0

    def pmf(i: int) -> float:  # in log space: comb(n, i) overflows a float for n in the thousands
        log = math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
        return math.exp(log + i * math.log(p) + (n - i) * math.log1p(-p))

    return min(1.0, max(0.0, sum(pmf(i) for i in range(k, n + 1))))


@dataclass
class ErrorStats:
    """Error statistics of ``out`` against the reference ``ref`` (both (N, classes) logits)."""

    max_abs: float
    mean_abs: float
    median_abs: float
    p99_abs: float
    max_rel: float
    mean_rel: float
    median_rel: float
    cosine_mean: float
    cosine_min: float
    top1_agreement: float  # percent
    nonfinite: int
    required_atol: float  # the statistic's value on the abs error: the smallest atol that passes alone
    required_rtol: float
    passed: bool


def compare_outputs(out: np.ndarray, ref: np.ndarray, atol: float, rtol: float, stat: str) -> ErrorStats:
    """Polygraphy-style comparison of two logit arrays; see the module docstring for the rules."""
    if stat not in STATS:
        raise UsageError(f"unknown error statistic {stat!r} (expected {', '.join(STATS)})")
    if out.shape != ref.shape:
        raise UsageError(f"output shapes differ: ONNX {out.shape} vs PyTorch {ref.shape}")
    out64, ref64 = out.astype(np.float64).reshape(len(out), -1), ref.astype(np.float64).reshape(len(ref), -1)
    nonfinite = int((~np.isfinite(out64)).sum() + (~np.isfinite(ref64)).sum())
    absdiff = np.abs(out64 - ref64)
    denom = np.abs(ref64)
    denom[denom == 0] = EPSILON
    reldiff = absdiff / denom
    norms = np.linalg.norm(out64, axis=1) * np.linalg.norm(ref64, axis=1)
    cos = np.where(norms > 0, (out64 * ref64).sum(axis=1) / np.maximum(norms, EPSILON), 1.0)
    agree = float((out64.argmax(axis=1) == ref64.argmax(axis=1)).mean() * 100.0) if len(out64) else 100.0
    s = {
        "max": (absdiff.max(), reldiff.max()),
        "mean": (absdiff.mean(), reldiff.mean()),
        "median": (np.median(absdiff), np.median(reldiff)),
    }
    if stat == "cosine":
        required_atol, required_rtol = 1.0 - float(cos.mean()), float("nan")
        failed = not required_atol <= atol
    elif stat == "elemwise":
        required_atol, required_rtol = s["max"]
        failed = bool((((absdiff > atol) | np.isnan(absdiff)) & ((reldiff > rtol) | np.isnan(reldiff))).any())
    else:
        required_atol, required_rtol = s[stat]
        failed = (np.isnan(required_atol) or required_atol > atol) and (np.isnan(required_rtol) or required_rtol > rtol)
    return ErrorStats(
        max_abs=float(s["max"][0]), mean_abs=float(s["mean"][0]), median_abs=float(s["median"][0]),
        p99_abs=float(np.percentile(absdiff, 99)), max_rel=float(s["max"][1]), mean_rel=float(s["mean"][1]),
        median_rel=float(s["median"][1]), cosine_mean=float(cos.mean()), cosine_min=float(cos.min()),
        top1_agreement=agree, nonfinite=nonfinite, required_atol=float(required_atol),
        required_rtol=float(required_rtol), passed=not failed and nonfinite == 0,
    )


@dataclass
class VerifyReport:
    """Truthy when ONNX Runtime matched PyTorch; ``to_dict()`` for JSON, ``to_text()`` for people."""

    onnx: str
    against: str
    data: str
    precision: str
    batch_size: int
    batches: int
    images: int
    stat: str
    atol: float
    rtol: float
    errors: ErrorStats
    onnx_backend: dict[str, Any]
    reference_backend: dict[str, Any]
    selection: dict[str, Any] | None = None  # token-selection models: flips, see SelectionCheck

    def __bool__(self) -> bool:
        return self.passed

    @property
    def passed(self) -> bool:
        return self.errors.passed and (self.selection is None or bool(self.selection["passed"]))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        errors = d.pop("errors")
        return {"passed": self.passed, **d, **{k: _finite_or_none(v) for k, v in errors.items() if k != "passed"}}

    def summary(self) -> str:
        e = self.errors
        verdict = "PASSED" if self.passed else "FAILED"
        why = f"; {e.nonfinite} non-finite outputs" if e.nonfinite else ""
        sel = self.selection
        flips = (f", kept tokens differ on {sel['images_flipped']}/{self.images} images and change PyTorch's fp32 "
                 f"top-1 on {sel['top1_changed_by_selection']} ({self._required(sel)})") if sel else ""
        name = BACKENDS[self.onnx_backend.get("backend", REFERENCE_BACKEND)].title
        return (f"{verdict} | {name} ({self.precision}) vs PyTorch on {self.images} {self.data} images at batch "
                f"{self.batch_size}: max abs {e.max_abs:.3g}, mean abs {e.mean_abs:.3g}, cosine {e.cosine_mean:.6f}, "
                f"top-1 agreement {e.top1_agreement:.2f}% [{self._tolerance()}]{flips}{why}")

    @staticmethod
    def _required(sel: dict[str, Any]) -> str:
        if sel["min_top1_agreement"] is None:
            return sel.get("not_judged") or "not judged"
        allowed = 100.0 - sel["min_top1_agreement"]
        verdict = "significantly" if sel["p_value"] < SELECTION_SIGNIFICANCE else "not significantly"
        return (f"{verdict} more than {allowed:g}% of images: one-sided binomial p = {sel['p_value']:.3g}, "
                f"fails below {SELECTION_SIGNIFICANCE:g}")

    def _tolerance(self) -> str:
        if self.stat == "cosine":
            return f"cosine: 1 - mean cosine <= {self.atol:g}"
        return f"{self.stat}: abs <= {self.atol:g} or rel <= {self.rtol:g}"

    def to_text(self) -> str:
        e = self.errors
        lines = [
            f"Comparing {self.onnx} [{self.onnx_backend.get('backend')} {self.precision}, "
            f"{', '.join(self.onnx_backend.get('providers', [])) or self.onnx_backend.get('device', '')}]",
            f"     vs {self.against} [torch fp32, {self.reference_backend.get('device')}]",
            f"Inputs: {self.images} {self.data} images, {self.batches} batches of {self.batch_size}",
            f"Tolerance: [abs={self.atol:g}, rel={self.rtol:g}] | Checking {self.stat} error",
            f"Absolute Difference | max={e.max_abs:.5g}, mean={e.mean_abs:.5g}, median={e.median_abs:.5g}, p99={e.p99_abs:.5g}",
            f"Relative Difference | max={e.max_rel:.5g}, mean={e.mean_rel:.5g}, median={e.median_rel:.5g}",
            f"Cosine Similarity   | mean={e.cosine_mean:.6f}, min={e.cosine_min:.6f}",
            f"Top-1 Agreement     | {e.top1_agreement:.2f}%",
        ]
        if self.stat == "cosine":
            lines.append(f"Minimum Required Tolerance: cosine | [abs={e.required_atol:.5g}] (1 - mean cosine)")
        else:
            lines.append(f"Minimum Required Tolerance: {self.stat} error | [abs={e.required_atol:.5g}] OR [rel={e.required_rtol:.5g}]")
        if e.nonfinite:
            lines.append(f"Non-finite values: {e.nonfinite} (NaN/Inf always fail)")
        if self.selection:
            sel = self.selection
            lines.append(f"Token Selection     | kept tokens differ on {sel['images_flipped']}/{self.images} images "
                         f"({sel['flip_fraction']:.2%}); the errors above compare those images with the fp32 "
                         "model run on the ONNX's kept tokens")
            lines.append(f"Top-1 Changed by Selection | {sel['top1_changed_by_selection']}/{self.images} images "
                         f"(fp32 PyTorch on the ONNX's kept tokens vs on its own; {self._required(sel)})")
            lines.append(f"Top-1 Agreement with PyTorch's own selection | {sel['top1_agreement_own_selection']:.2f}%")
        lines.append(self.summary())
        return "\n".join(lines)


def default_tolerances(precision: str) -> tuple[float, float, str]:
    """(atol, rtol, stat) for an ONNX of this precision (unknown precisions get the fp32 defaults)."""
    return DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["fp32"])


def verify_onnx(
    onnx_path: str | os.PathLike[str],
    against: str | Deployable,
    *,
    data: str = "random",
    batches: int | None = None,
    batch_size: int = 32,
    atol: float | None = None,
    rtol: float | None = None,
    stat: str | None = None,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
    backend: str = REFERENCE_BACKEND,
) -> VerifyReport:
    """Run the ONNX (ONNX Runtime) and ``against`` (artifact path, timm name, or loaded model; PyTorch
    fp32 on CPU) on the same inputs and compare their logits.

    ``data``: ``random`` (``batches`` seeded batches, default 4) or a data spec (its val split; all
    of it unless ``batches`` is given). Tolerances left as None take the precision's defaults.
    Mismatched input shapes or class counts are a one-line ``UsageError``. ``backend``: the runtime that runs
    the ONNX (onnxruntime, or openvino).
    """
    from vitc.backends import load_runner
    from vitc.backends.torch_runner import TorchRunner

    VerifySettings(data=data, batches=batches, batch_size=batch_size, atol=atol, rtol=rtol, stat=stat, seed=seed,
                   device=device, backend=backend).validate()
    options: dict[str, Any] = {"threads": threads} if threads else {}
    ort_runner: Any = load_runner(str(onnx_path), backend=backend, device=device, **options)
    with ort_runner:
        dep = (against if isinstance(against, Deployable)
               else load_deployable(str(against), keep_ratio=ort_runner.keep_ratio, strict_ratio=False))
        spec = dep.spec
        if tuple(spec.input_shape) != ort_runner.input_shape:
            raise UsageError(f"{onnx_path} takes input {_shape(ort_runner.input_shape)} but {dep.source} takes "
                             f"{_shape(spec.input_shape)}: they are not the same model")
        classes = ort_runner.output_classes
        if isinstance(classes, int) and classes != spec.num_classes:
            raise UsageError(f"{onnx_path} outputs {classes} classes but {dep.source} has {spec.num_classes}: they are not the same model")
        d_atol, d_rtol, d_stat = default_tolerances(ort_runner.precision)
        atol, rtol, stat = d_atol if atol is None else atol, d_rtol if rtol is None else rtol, stat or d_stat
        ref_runner = TorchRunner(dep.model, spec, device="cpu", precision="fp32")
        check = SelectionCheck.for_model(onnx_path, dep.model, spec, ort_runner)
        outs, refs = [], []
        inputs, total, label = _inputs(data, spec, batches, batch_size, seed)
        with progress(f"verify {label}", total) as bar:
            for x, y in inputs:
                out_b, ref_b = (ort_runner(x), ref_runner(x)) if check is None else check(x, y)
                outs.append(out_b)
                refs.append(ref_b)
                bar.advance()
        if not outs:
            raise UsageError(f"no {label} images to verify with")
        out, ref = np.concatenate(outs), np.concatenate(refs)
        errors = compare_outputs(out, ref, atol, rtol, stat)
        return VerifyReport(
            onnx=str(onnx_path), against=dep.source, data=label, precision=ort_runner.precision, batch_size=batch_size,
            batches=len(outs), images=len(out), stat=stat, atol=atol, rtol=rtol, errors=errors,
            onnx_backend=ort_runner.describe(), reference_backend=ref_runner.describe(),
            selection=check.summary() if check is not None else None,
        )


class SelectionCheck:
    """Verification of a token-selection (DynamicViT) ONNX that separates numerics from decisions.

    Per batch: the ONNX's logits and kept tokens (TopK indices marked as outputs, see
    :mod:`vitc.onnx.selection`) and PyTorch's own kept tokens. Images with the same kept set
    are compared with PyTorch's logits as usual; an image whose kept set differs is a *flip* and is
    compared with the fp32 model run on the ONNX's kept tokens (the gathered inference forward with
    the ONNX's TopK indices forced), so its numbers still check every op. The decisions are judged by
    their effect in fp32: on real images, the images whose PyTorch top-1 on the ONNX's kept tokens
    differs from its top-1 on its own kept tokens must not be significantly more than
    ``100 - MIN_SELECTION_TOP1_AGREEMENT`` percent (see the constant). The number of images with
    another kept set, and the ONNX's top-1 agreement with PyTorch's own selection, are reported.
    """

    def __init__(self, probe: Any, model: Any) -> None:
        self.probe, self.model = probe, model
        self.images = self.flipped = self.agree_own = self.changed = 0
        self.labelled = self.correct_own = self.classes = 0

    @classmethod
    def for_model(cls, onnx_path: str | os.PathLike[str], model: Any, spec: Any, ort_runner: Any) -> SelectionCheck | None:
        from vitc.core.token_select import TokenSelect
        from vitc.onnx.io import load_onnx
        from vitc.onnx.selection import topk_index_outputs

        stages = sum(isinstance(m, TokenSelect) for m in getattr(model, "blocks", []))
        if not stages:
            return None
        graph = load_onnx(onnx_path)
        topk_nodes = len(topk_index_outputs(graph))
        if topk_nodes != stages:
            raise UsageError(f"{onnx_path} has {topk_nodes} TopK nodes but the model selects "
                             f"tokens at {stages} stages: they are not the same model")
        return cls(ort_runner.selection_probe(graph, spec.num_patches), model)  # each backend's own decisions

    def __call__(self, x: np.ndarray, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ONNX logits, reference logits on the same kept tokens) for one batch x (B, C, H, W); ``labels``
        (real images) tell whether the model is above chance, which decides whether flips are judged.

        PyTorch's own logits and kept tokens come from one gathered forward (the model's own forward
        with the TopK indices kept); only the flipped images run again, on the ONNX's tokens."""
        import torch

        from vitc.methods.dynamicvit.forward import gathered_forward
        from vitc.onnx.selection import keep_masks_from_indices

        out, onnx_indices = self.probe(x)
        images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        with torch.inference_mode():
            own_logits, own_indices = gathered_forward(self.model, images)
            ref_own = own_logits.float().numpy()
            n = self.probe.num_patches
            own = keep_masks_from_indices([i.numpy() for i in own_indices], n)
            theirs = keep_masks_from_indices(onnx_indices, n)
            differs = np.zeros(len(x), dtype=bool)
            for mine, other in zip(own, theirs):
                differs |= (mine != other).any(axis=1)
            ref = ref_own.copy()
            if differs.any():
                sel = torch.from_numpy(differs)
                forced, _ = gathered_forward(self.model, images[sel], [torch.from_numpy(i)[sel] for i in onnx_indices])
                ref[differs] = forced.float().numpy()
                self.changed += int((ref[differs].argmax(1) != ref_own[differs].argmax(1)).sum())
        self.images += len(x)
        self.flipped += int(differs.sum())
        self.agree_own += int((out.argmax(1) == ref_own.argmax(1)).sum())
        self.classes = ref_own.shape[1]
        if labels is not None:
            self.labelled += len(labels)
            self.correct_own += int((ref_own.argmax(1) == np.asarray(labels)).sum())
        return out, ref

    def summary(self) -> dict[str, Any]:
        """Flips are judged on real (labelled) images where the model has class evidence. On random inputs,
        or where PyTorch's own top-1 on these images is not above chance (more than 3 standard errors
        above 1/classes), the logits are nearly tied and a swapped token flips the argmax by chance: the
        flips are then reported, not judged. The tolerance on the logits applies in every case."""
        agreement = 100.0 * self.agree_own / max(self.images, 1)
        why = None
        own_top1 = 100.0 * self.correct_own / self.labelled if self.labelled else None
        if not self.labelled:
            why = "not judged on random inputs"
        else:
            chance = 1.0 / max(self.classes, 1)
            bar = chance + 3.0 * math.sqrt(chance * (1.0 - chance) / self.labelled)
            if self.correct_own / self.labelled <= bar:
                why = (f"not judged: the model's own top-1 on these images, {own_top1:.1f}%, is not above chance "
                       f"({100 * chance:.0f}% + 3 s.e. = {100 * bar:.1f}%), so its logits carry no class evidence")
        rate = (100.0 - MIN_SELECTION_TOP1_AGREEMENT) / 100.0
        p_value = binomial_tail(self.changed, self.images, rate)
        required = None if why else MIN_SELECTION_TOP1_AGREEMENT
        return {"passed": required is None or p_value >= SELECTION_SIGNIFICANCE, "images_flipped": self.flipped,
                "flip_fraction": self.flipped / max(self.images, 1), "top1_changed_by_selection": self.changed,
                "p_value": p_value, "top1_agreement_own_selection": agreement,
                "min_top1_agreement": required, "not_judged": why, "own_top1": own_top1}


def _inputs(data: str, spec: Any, batches: int | None, batch_size: int,
            seed: int) -> tuple[Iterator[tuple[np.ndarray, np.ndarray | None]], int, str]:
    """(batches of (float32 images, labels or None), number of batches, label) for ``random`` or a data
    spec's val split."""
    if data == "random":
        n = batches or RANDOM_BATCHES
        mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(spec.std, dtype=np.float32).reshape(1, -1, 1, 1)

        def gen() -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
            rng = np.random.default_rng(seed)
            for _ in range(n):
                pixels = rng.random((batch_size, *spec.input_shape), dtype=np.float32)
                yield (pixels - mean) / std, None

        return gen(), n, "random"
    from vitc.core.data import make_loader, parse_data

    source = parse_data(data)
    loader = make_loader(source.dataset(spec, "val"), batch_size, shuffle=False)
    n = len(loader) if batches is None else min(batches, len(loader))

    def real() -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        for i, (images, labels) in enumerate(loader):
            if i >= n:
                return
            yield images.numpy(), labels.numpy()

    return real(), n, f"{source} val"


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _finite_or_none(v: Any) -> Any:
    return None if isinstance(v, float) and not np.isfinite(v) else v

