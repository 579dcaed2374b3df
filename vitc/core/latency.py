"""A measured latency model of one ViT on one device, backend, precision and batch size.

``vitc profile`` measures it (:mod:`vitc.checks.profile`) and writes it as JSON; ``--target-speedup`` steers by
it. Per block, latency is a function of the heads kept ``h``, the MLP neurons kept ``m`` and the tokens entering
``n``, split into an attention half and an MLP half that add::

    t(h, m, n) = Ta(h, n) + Tm(m, n)          T(spec) = F + c · Σ_l [t(h_l, m_l, n_l) + P(n_{l-1}) if tokens are selected before l]

``Ta`` and ``Tm`` are tables over a coarse grid, derived from blocks timed at (h, full MLP, n) and (full heads,
m, n); the part of a block that depends on neither count (norms, residuals) goes with the attention half, as
the MLP timings extrapolate it (m → 0). Each table is made non-decreasing along every axis and interpolated
piecewise-linearly (so it stays monotone), extrapolated linearly below its smallest grid point and clamped at 0.
``P(n)`` is a token-selection module over n tokens; ``F`` the rest of the model (patch embedding, final norm,
head, the call itself) at the model's input size; ``c`` the one calibration factor that makes the model
reproduce the dense model's measured latency exactly.
"""

from __future__ import annotations

import bisect
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitc.core.errors import UsageError
from vitc.core.spec import BlockSpec, ViTSpec

LATENCY_FORMAT = "vitc.latency/1"


# ------------------------------------------------------------------------------------------------
# piecewise-linear, monotone tables
# ------------------------------------------------------------------------------------------------

def interp1(xs: list[float], ys: list[float], x: float) -> float:
    """Piecewise-linear interpolation on ascending ``xs``; linear extrapolation outside, clamped at 0."""
    if len(xs) == 1:
        return max(0.0, ys[0])
    i = min(max(bisect.bisect_right(xs, x) - 1, 0), len(xs) - 2)
    x0, x1, y0, y1 = xs[i], xs[i + 1], ys[i], ys[i + 1]
    return max(0.0, y0 + (y1 - y0) * (x - x0) / (x1 - x0))


def interp2(xs: list[float], ys: list[float], table: list[list[float]], x: float, y: float) -> float:
    """Bilinear interpolation of ``table[i][j]`` (rows over ``xs``, columns over ``ys``), as :func:`interp1` on each axis."""
    column = [interp1(ys, row, y) for row in table]
    return interp1(xs, column, x)


def monotone(table: list[list[float]]) -> list[list[float]]:
    """The smallest table >= ``table`` that is non-decreasing along both axes and >= 0 (running maxima)."""
    out = [[max(0.0, v) for v in row] for row in table]
    for row in out:
        for j in range(1, len(row)):
            row[j] = max(row[j], row[j - 1])
    for i in range(1, len(out)):
        out[i] = [max(a, b) for a, b in zip(out[i], out[i - 1])]
    return out


# ------------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------------

@dataclass
class LatencyModel:
    """The fitted model plus everything needed to trust it: where and how it was measured, and every number.

    ``tokens``: the grid of tokens entering a block (prefix tokens included), ascending; ``heads``/``mlp``: the
    grids of kept heads and MLP neurons. ``attention[i][j]`` = Ta(heads[j], tokens[i]) and ``mlp_table[i][k]`` =
    Tm(mlp[k], tokens[i]) in ms; ``predictor[i]`` = P(tokens[i]); ``fixed_ms`` = F; ``dense_ms``: the dense model's
    measured latency; ``calibration`` = c.
    """

    spec: ViTSpec
    target: dict[str, Any]
    tokens: list[int]
    heads: list[int]
    mlp: list[int]
    attention: list[list[float]]
    mlp_table: list[list[float]]
    predictor: list[float]
    fixed_ms: float
    dense_ms: float
    calibration: float = 1.0
    measurements: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    # ---- prediction ----------------------------------------------------------------------------
    def attention_ms(self, heads: float, tokens: float) -> float:
        return interp2(self.tokens, self.heads, self.attention, tokens, heads)  # type: ignore[arg-type]

    def mlp_ms(self, neurons: float, tokens: float) -> float:
        return interp2(self.tokens, self.mlp, self.mlp_table, tokens, neurons)  # type: ignore[arg-type]

    def block_ms(self, block: BlockSpec, tokens: float) -> float:
        """One block's modelled latency (uncalibrated) at ``tokens`` tokens entering it."""
        return self.attention_ms(block.heads, tokens) + self.mlp_ms(block.mlp_hidden, tokens)

    def predictor_ms(self, tokens: float) -> float:
        return interp1(self.tokens, self.predictor, tokens)  # type: ignore[arg-type]

    def predict(self, spec: ViTSpec, name: str = "") -> dict[str, Any]:
        """Predicted latency of ``spec`` (ms per batch) and its speedup over the dense model it was profiled on."""
        self.check_fits(spec, name or spec.name)
        prefix = spec.num_prefix_tokens
        blocks, prev = [], spec.num_patches
        for block, patches in zip(spec.blocks, spec.keep_schedule()):
            ms = self.block_ms(block, patches + prefix)
            selection = self.predictor_ms(prev + prefix) if block.keep_tokens is not None else 0.0
            blocks.append({"tokens": patches + prefix, "heads": block.heads, "mlp": block.mlp_hidden,
                           "block_ms": self.calibration * ms, "selection_ms": self.calibration * selection})
            prev = patches
        latency = self.fixed_ms + sum(b["block_ms"] + b["selection_ms"] for b in blocks)
        if not latency > 0:  # a profile can predict 0 ms only if its tables and fixed part are 0 (edited or damaged)
            raise UsageError(f"{self.source or 'the latency profile'} predicts 0 ms for {name or spec.name}: its fixed part "
                             "and every table entry it reads are 0 (measure it again with `vitc profile`)")
        return {"latency_ms": latency, "dense_ms": self.dense_ms, "speedup": self.dense_ms / latency,
                "latency_ratio": latency / self.dense_ms, "fixed_ms": self.fixed_ms, "blocks": blocks}

    def check_fits(self, spec: ViTSpec, name: str, origin: dict[str, Any] | None = None, *, dense: bool = False) -> None:
        """Refuse a model whose block shapes the profile cannot speak for (other width, head size or input), and one
        that does not come from the dense model the profile measured: ``dense``: ``spec`` is a dense model itself
        (depth and every block's shape must be the profile's); ``origin``: the ``origin`` record of a compressed
        model's artifact (the original dense model's MACs must be the profile's). Without either, a model deeper
        than the profiled one is refused (compression never adds blocks)."""
        d = self.spec
        ours = (spec.embed_dim, spec.img_size, spec.patch_size, spec.num_prefix_tokens, spec.in_chans)
        theirs = (d.embed_dim, d.img_size, d.patch_size, d.num_prefix_tokens, d.in_chans)
        if ours != theirs:
            raise UsageError(f"{self.source or 'the latency profile'} was measured on {d.name} (embed {d.embed_dim}, "
                             f"{d.img_size}px/{d.patch_size}, {d.num_prefix_tokens} prefix tokens); {name} is embed "
                             f"{spec.embed_dim}, {spec.img_size}px/{spec.patch_size}, {spec.num_prefix_tokens} prefix tokens")
        head_dims = {b.head_dim for b in spec.blocks}
        if head_dims - {d.blocks[0].head_dim}:
            raise UsageError(f"{name} has head size {sorted(head_dims)}, the profile {d.blocks[0].head_dim}")
        too_wide = [(i, b) for i, b in enumerate(spec.blocks) if b.heads > self.heads[-1] or b.mlp_hidden > self.mlp[-1]]
        if too_wide:
            i, b = too_wide[0]
            raise UsageError(f"{name} block {i} ({b.heads} heads, MLP {b.mlp_hidden}) is wider than the profile's "
                             f"grid ({self.heads[-1]} heads, MLP {self.mlp[-1]})")
        self._check_origin(spec, name, origin, dense)

    def _describe_dense(self) -> str:
        d = self.spec
        shapes = sorted({(b.heads, b.head_dim, b.mlp_hidden) for b in d.blocks})
        blocks = ", ".join(f"{h} heads x {hd}, MLP {m}" for h, hd, m in shapes)
        return f"{d.name} ({d.depth} blocks of {blocks})"

    def _check_origin(self, spec: ViTSpec, name: str, origin: dict[str, Any] | None, dense: bool) -> None:
        where = self.source or "the latency profile"
        d = self.spec
        ours = [(b.heads, b.head_dim, b.mlp_hidden) for b in spec.blocks]
        if ours == [(b.heads, b.head_dim, b.mlp_hidden) for b in d.blocks]:
            return  # the profiled architecture itself (token selection aside)
        if dense:
            mine = ", ".join(f"{h} heads x {hd}, MLP {m}" for h, hd, m in sorted(set(ours)))
            raise UsageError(f"{where} was measured on {self._describe_dense()}; {name} is another model "
                             f"({spec.depth} blocks of {mine}): measure its own with `vitc profile`")
        if isinstance(origin, dict) and isinstance(origin.get("macs"), (int, float)):
            from vitc.core.flops import model_macs

            profiled = model_macs(d.without_token_selection().replace(num_classes=spec.num_classes))
            if int(origin["macs"]) != profiled:
                raise UsageError(f"{where} was measured on {self._describe_dense()}, {profiled / 1e6:.3f} M MACs; {name} was "
                                 f"compressed from {origin.get('name', 'another model')} ({float(origin['macs']) / 1e6:.3f} M "
                                 "MACs): profile that dense model instead")
            return
        if spec.depth > d.depth:
            raise UsageError(f"{where} was measured on {self._describe_dense()}; {name} has {spec.depth} blocks, more than "
                             "the profiled model: profile the dense model it comes from")

    def check_deployment(self, name: str, *, backend: str | None = None, precision: str | None = None,
                         batch_sizes: list[int] | None = None) -> None:
        """Refuse to predict ``name`` where it runs otherwise than the profile was measured: on another backend, in
        another precision, or at none of the batch sizes (``None``: not known here, not checked)."""
        t = self.target
        differs = []
        if backend is not None and backend != t.get("backend"):
            differs.append(f"runs on {backend}")
        if precision is not None and precision != t.get("precision"):
            differs.append(f"computes in {precision}")
        if batch_sizes is not None and t.get("batch_size") not in batch_sizes:
            differs.append(f"runs at batch {','.join(map(str, batch_sizes))}")
        if differs:
            raise UsageError(f"{self.source or 'the latency profile'} was measured on {t.get('backend')} {t.get('precision')} "
                             f"at batch {t.get('batch_size')}; {name} {' and '.join(differs)}: it predicts only what it "
                             "measured (profile that backend, precision and batch with `vitc profile`)")

    def dense_blocks_ms(self) -> float:
        """Σ over the dense model's blocks of the uncalibrated block model."""
        n = self.spec.num_patches + self.spec.num_prefix_tokens
        return sum(self.block_ms(b, n) for b in self.spec.blocks)

    # ---- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": LATENCY_FORMAT,
            "model": self.spec.name,
            "spec": self.spec.to_dict(),
            "target": self.target,
            "environment": self.environment,
            "grid": {"tokens": self.tokens, "heads": self.heads, "mlp": self.mlp},
            "fit": {"fixed_ms": self.fixed_ms, "dense_ms": self.dense_ms, "calibration": self.calibration,
                    "attention_ms": self.attention, "mlp_ms": self.mlp_table, "predictor_ms": self.predictor},
            "measurements": self.measurements,
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "") -> LatencyModel:
        where = source or "latency profile"
        if not isinstance(d, dict) or d.get("format") != LATENCY_FORMAT:
            raise UsageError(f"{where} is not a vitc latency profile (format {LATENCY_FORMAT!r}; write one with `vitc profile`)")
        try:
            grid, fit = d["grid"], d["fit"]
            model = cls(
                spec=ViTSpec.from_dict(d["spec"]), target=dict(d["target"]),
                tokens=[int(v) for v in grid["tokens"]], heads=[int(v) for v in grid["heads"]],
                mlp=[int(v) for v in grid["mlp"]],
                attention=[[float(v) for v in row] for row in fit["attention_ms"]],
                mlp_table=[[float(v) for v in row] for row in fit["mlp_ms"]],
                predictor=[float(v) for v in fit["predictor_ms"]],
                fixed_ms=float(fit["fixed_ms"]), dense_ms=float(fit["dense_ms"]), calibration=float(fit["calibration"]),
                measurements=list(d.get("measurements", [])), environment=dict(d.get("environment", {})), source=source,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"{where} is malformed: {type(e).__name__} {e}") from None
        model.validate()
        return model

    def validate(self) -> None:
        where = self.source or "latency profile"
        for name, axis in (("tokens", self.tokens), ("heads", self.heads), ("mlp", self.mlp)):
            if not axis or any(b <= a for a, b in zip(axis, axis[1:])):
                raise UsageError(f"{where}: grid {name} must be non-empty and strictly ascending, got {axis}")
        shapes = [(self.attention, len(self.heads)), (self.mlp_table, len(self.mlp))]
        if any(len(t) != len(self.tokens) or any(len(r) != n for r in t) for t, n in shapes) or len(self.predictor) != len(self.tokens):
            raise UsageError(f"{where}: fitted tables do not match the grid")
        numbers = [self.fixed_ms, self.dense_ms, self.calibration, *self.predictor,
                   *(v for t, _ in shapes for row in t for v in row)]
        if not all(math.isfinite(v) and v >= 0 for v in numbers) or self.dense_ms <= 0:
            raise UsageError(f"{where}: fitted values must be finite and >= 0 (dense latency > 0)")
        tables = [("attention_ms", self.attention), ("mlp_ms", self.mlp_table), ("predictor_ms", [self.predictor])]
        for name, table in tables:  # the fit makes them monotone: a decreasing one was edited or damaged
            if monotone(table) != table:
                raise UsageError(f"{where}: fit.{name} decreases along an axis; `vitc profile` writes non-decreasing tables, "
                                 "so this file was edited or damaged (measure it again)")
        if self.fixed_ms == 0 and (self.calibration == 0 or not any(v > 0 for t, _ in shapes for row in t for v in row)):
            raise UsageError(f"{where}: every fitted latency is 0, so it predicts 0 ms for any model; this file was edited "
                             "or damaged (measure it again with `vitc profile`)")


def load_latency(path: str | os.PathLike[str]) -> LatencyModel:
    """Read a ``vitc profile`` JSON; one-line errors for a missing, unreadable or foreign file."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"no such latency profile: {p} (write one with `vitc profile MODEL -o {p.name}`)")
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{p} is not a readable latency profile: {str(e).splitlines()[0][:200]}") from None
    return LatencyModel.from_dict(data, source=str(p))


# ------------------------------------------------------------------------------------------------
# fitting: from probe timings to the tables
# ------------------------------------------------------------------------------------------------

def fit_tables(tokens: list[int], heads: list[int], mlp: list[int], probe_ms: dict[str, float]) -> dict[str, Any]:
    """Ta, Tm, P and F from the probes' median latencies (ms), keyed as :func:`probe_key` names them.

    Per token count n: ``ref1``/``ref3`` (1 and 3 full blocks) give a full block R(n) = (ref3 - ref1)/2 and the
    fixed rest F(n) = ref1 - R(n); ``heads h``/``mlp m`` (2 blocks of that shape) give A(h, n) = (probe - F(n))/2
    and M(m, n) likewise; ``select`` (a token-selection module keeping every token, then 1 full block) gives
    P(n) = select - ref1. The attention half at full heads is what the MLP timings extrapolate to at m = 0.
    """
    full_h, full_m = heads[-1], mlp[-1]
    att, mlp_t, pred, fixed = [], [], [], []
    for n in tokens:
        ref1, ref3 = probe_ms[probe_key("ref1", n)], probe_ms[probe_key("ref3", n)]
        ref = (ref3 - ref1) / 2
        f = ref1 - ref
        a_row = [ref if h == full_h else (probe_ms[probe_key(f"heads{h}", n)] - f) / 2 for h in heads]
        m_row = [ref if m == full_m else (probe_ms[probe_key(f"mlp{m}", n)] - f) / 2 for m in mlp]
        base = min(max(interp1([float(v) for v in mlp], m_row, 0.0) if len(mlp) > 1 else 0.0, 0.0), ref)  # Ta(H, n)
        mlp_full = ref - base  # Tm(M, n)
        att.append([a - mlp_full for a in a_row])
        mlp_t.append([m - base for m in m_row])
        pred.append(probe_ms[probe_key("select", n)] - ref1)
        fixed.append(f)
    return {"attention": monotone(att), "mlp": monotone(mlp_t), "predictor": monotone([pred])[0], "fixed_by_tokens": fixed}


def probe_key(kind: str, tokens: int) -> str:
    """The name of a probe in a profile's measurements (``ref1@197``): built here, and read here by the fit."""
    return f"{kind}@{tokens}"


# ------------------------------------------------------------------------------------------------
# the grid and its probes: what the fit above reads
# ------------------------------------------------------------------------------------------------

def _spread(low: int, high: int, points: int) -> list[int]:
    """``points`` distinct integers from ``low`` to ``high`` inclusive, evenly spread (fewer if the range is short)."""
    if high <= low:
        return [high]
    values = {round(low + (high - low) * i / (points - 1)) for i in range(points)}
    return sorted(values)


@dataclass
class Grid:
    sides: list[int]  # grid sides g: g² patch tokens
    heads: list[int]
    mlp: list[int]

    def tokens(self, spec: ViTSpec) -> list[int]:
        return [g * g + spec.num_prefix_tokens for g in self.sides]

    def to_dict(self, spec: ViTSpec) -> dict[str, Any]:
        return {"sides": self.sides, "tokens": self.tokens(spec), "heads": self.heads, "mlp": self.mlp}


def plan_grid(spec: ViTSpec, token_points: int, head_points: int, mlp_points: int) -> Grid:
    """The coarse grid for a dense ``spec`` whose blocks all share one shape (as timm ViTs do)."""
    shapes = {(b.heads, b.head_dim, b.mlp_hidden) for b in spec.blocks}
    if len(shapes) != 1 or any(b.keep_tokens is not None for b in spec.blocks):
        raise UsageError(f"{spec.name} is not a dense model with one block shape (heads/head_dim/MLP {sorted(shapes)}); "
                         "profile the dense model it was compressed from")
    heads, _, hidden = shapes.pop()
    mlp_low = max(1, hidden // 8)
    return Grid(sides=_spread(1, spec.grid, token_points), heads=_spread(1, heads, head_points),
                mlp=_spread(mlp_low, hidden, mlp_points))


@dataclass
class Probe:
    """One small ViT to time: ``kind`` (dense, ref1, ref3, select, headsH, mlpM) at ``tokens`` tokens entering it."""

    kind: str
    spec: ViTSpec
    tokens: int
    heads: int
    mlp: int
    blocks: int

    @property
    def key(self) -> str:
        return "dense" if self.kind == DENSE_PROBE else probe_key(self.kind, self.tokens)


DENSE_PROBE = "dense"
REFERENCE_PROBE = "ref1"  # 1 full block at every token: every other probe is timed alternately with it


def probes(spec: ViTSpec, grid: Grid) -> list[Probe]:
    """Every probe the grid needs, the dense model first (it sizes the time estimate and calibrates the fit).

    Per token count: 1 and 3 full blocks, 2 blocks at each grid head count, 2 at each grid MLP width, and a
    token-selection module before 1 full block; their medians are what :func:`fit_tables` reads."""
    ref = spec.blocks[0]
    full_h, full_m = ref.heads, ref.mlp_hidden
    out = [Probe(DENSE_PROBE, spec, spec.num_patches + spec.num_prefix_tokens, full_h, full_m, spec.depth)]

    def probe(kind: str, side: int, blocks: list[BlockSpec]) -> None:
        s = spec.replace(img_size=side * spec.patch_size, blocks=blocks)
        out.append(Probe(kind, s, side * side + spec.num_prefix_tokens, blocks[-1].heads, blocks[-1].mlp_hidden, len(blocks)))

    def block(h: int, m: int) -> BlockSpec:
        return BlockSpec(heads=h, head_dim=ref.head_dim, mlp_hidden=m)

    for side in sorted(grid.sides, reverse=True):
        probe(REFERENCE_PROBE, side, [block(full_h, full_m)])
        probe("ref3", side, [block(full_h, full_m)] * 3)
        probe("select", side, [BlockSpec(heads=full_h, head_dim=ref.head_dim, mlp_hidden=full_m, keep_tokens=side * side)])
        for h in grid.heads[:-1]:
            probe(f"heads{h}", side, [block(h, full_m)] * 2)
        for m in grid.mlp[:-1]:
            probe(f"mlp{m}", side, [block(full_h, m)] * 2)
    return out


__all__ = ["DENSE_PROBE", "LATENCY_FORMAT", "REFERENCE_PROBE", "Grid", "LatencyModel", "Probe", "fit_tables", "interp1",
           "interp2", "load_latency", "monotone", "plan_grid", "probe_key", "probes"]
