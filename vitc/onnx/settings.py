"""Settings of ``vitc export`` and ``vitc quantize`` (torch-free; the CLI and the pipeline derive from them)."""

from __future__ import annotations

from dataclasses import dataclass

from vitc.core.errors import UsageError
from vitc.core.settings import Label, Settings, setting
from vitc.core.validation import check_data_spec, check_image_source

OPSETS = (18, 19, 20)  # dynamo exports opset >= 18; TensorRT 10 parses up to 20
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
PERCENTILE = 99.999  # --method percentile's default


@dataclass(kw_only=True)
class ExportSettings(Settings):
    """One TensorRT-ready ONNX file from an artifact or a timm name."""

    opset: int = setting(18, choices=OPSETS, help="ONNX opset (dynamo export needs >= 18; TensorRT 10 parses <= 20).")
    static_batch: int | None = setting(None, min=1, aliases=("--batch",), metavar="N",
                                       help="Export a static batch of N images (default: a dynamic batch axis, traced at 2).")
    fp16: bool = setting(False, help="FP16 model converted from the checked FP32 graph (onnxruntime float16 converter): "
                                     "FP32 input/output, FP16 matmuls/GELU/adds; LayerNorm and softmax "
                                     "(overflow/precision) and the token-score path (predictor + TopK, so scores are "
                                     "not rounded) stay FP32. Tokens whose scores nearly tie can still flip, since the "
                                     "predictor reads FP16 activations.")
    keep_ratio: float | None = setting(None, min=0, max=1, min_open=True,
                                       help="Token-selection artifacts: keep ratio rho in (0, 1] (default: the trained one).")
    verify: bool = setting(True, help="Check ONNX Runtime against PyTorch once before writing (default tolerances for "
                                      "the precision).")
    data: str = setting("random", parse=check_image_source, metavar="SPEC|random",
                        help="Images for the parity check: random (seeded uniform [0,1) pixels) or a data spec "
                             "(digits | fashion-mnist[:PATH] | imagefolder:PATH).")
    check: bool = setting(True, help="Run the TensorRT readiness check before writing.")


@dataclass(kw_only=True)
class QuantizeSettings(Settings):
    """INT8 Q/DQ from an FP32 ONNX, calibrated on real images."""

    data: str = setting(parse=check_data_spec, aliases=("--calib-data",), metavar="SPEC",
                        help="Real calibration images: digits | fashion-mnist[:PATH] | imagefolder:PATH (its train "
                             "split; never synthetic).")
    num_samples: int = setting(512, min=1, help="Calibration images.")
    method: str = setting("minmax", choices=CALIBRATION_METHODS,
                          help="Activation range calibration: minmax, entropy (KL), or percentile of |x|.")
    percentile: float | None = setting(None, min=0, max=100, min_open=True,
                                       help=f"Percentile (percent) for --method percentile [default: {PERCENTILE:g}].")
    batch_size: int = setting(32, min=1, help="Calibration batch (images).")
    attention: bool = setting(False, flag="--quantize-attention",
                              help="Also quantize attention's activation x activation matmuls (Q.K^T, P.V); off by default.")
    per_channel: bool = setting(True, help="Per-channel weight scales (per-tensor with --no-per-channel).")
    float_blocks: list[int] | None = setting(None, min=0, metavar="I,J,...",
                                             help="Blocks (0-based) whose MatMuls stay float: a mixed-precision file "
                                                  "(`vitc tune` picks them where INT8 does not pay or costs accuracy).")
    reduce_range: str = setting("auto", choices=("auto", "yes", "no"),
                                help="7-bit weights (ONNX Runtime's reduce_range). auto: yes on an x86 CPU without VNNI, "
                                     "whose u8 x s8 kernels add products in int16 and saturate on 8-bit weights (a "
                                     "vit-nano's INT8 logits: cosine 0.98 against fp32 instead of 0.996); no elsewhere "
                                     "(VNNI, ARM, and files meant for TensorRT: build them with --reduce-range no).")
    check: bool = setting(True, help="Run the TensorRT readiness check before writing.")
    seed: int = setting(0, min=0, help="Seed of the calibration image order.")

    def rules(self, label: Label) -> None:
        if self.percentile is not None and self.method != "percentile":
            raise UsageError(f"{label('percentile')} applies to {label('method')} percentile only (this run calibrates "
                             f"with {self.method}); leave it out, or give {label('method')} percentile")
        if self.percentile is None and self.method == "percentile":
            self.percentile = PERCENTILE
