"""``vitc tune`` settings: one dataclass for the command, the ``tune:`` section of ``vitc run`` and the Python API
(torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vitc.backends import BACKENDS, REFERENCE_BACKEND
from vitc.core.device import check_device_name
from vitc.core.errors import UsageError
from vitc.core.settings import Label, Settings, setting
from vitc.methods import METHODS

PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@dataclass(kw_only=True)
class TuneSettings(Settings):
    """The target, what may be tried, how long each try may train, and how the loop closes."""

    target_speedup: float = setting(min=1, min_open=True, metavar="S",
                                    help="Speedup over the reference (the dense model on --reference) to reach, measured "
                                         "paired on this device at --batch-size.")
    max_drop: float | None = setting(None, min=0, metavar="POINTS",
                                     help="Largest top-1 drop (percentage points) against the dense model on the held-out "
                                          "images that a pick may cost [default: no limit; the most accurate pick that "
                                          "meets S wins].")
    batch_size: int = setting(1, min=1, help="Images per call: the batch you deploy at (its latency models and benches).")
    backends: list[str] = setting([], choices=tuple(BACKENDS), metavar="B1,B2",
                                  help="Backends to try [default: those that run here: onnxruntime and openvino on a "
                                       "CPU; tensorrt and torch on a GPU].")
    precisions: list[str] = setting([], choices=PRECISIONS, metavar="P1,P2",
                                    help="Precisions to try where a backend runs them [default: fp32,int8 on a CPU; "
                                         "fp16,int8 on a GPU; bf16 and fp16 on a CPU only when asked].")
    reference: str = setting(f"{REFERENCE_BACKEND}:fp32", metavar="BACKEND:PRECISION",
                             help="What every speedup is over: the dense model on this backend at this precision.")
    device: str = setting("cpu", parse=check_device_name, help="cpu, cuda or cuda:N (where the candidates run).")
    threads: int | None = setting(None, min=1, help="CPU threads of every runtime [default: OMP_NUM_THREADS, else the "
                                                    "runtime's own default].")
    methods: list[str] = setting(list(METHODS), choices=tuple(METHODS), metavar="M1,M2",
                                 help="Methods to split the compression between (their combination when both "
                                      "uvc and dynamicvit are listed with uvc+dynamicvit).")
    splits: list[float] = setting([2 / 3, 1 / 3], min=0, max=1, min_open=True, max_open=True, metavar="A1,A2",
                                  help="UVC's share of log(speedup) in the combination, one try each (the rest is token "
                                       "selection's): 0.67 means UVC takes C^0.67 of a compression speedup C.")
    epochs: int = setting(4, min=1, help="Training epochs of each try: UVC's search, DynamicViT's training.")
    finetune_epochs: int = setting(2, min=0, help="UVC's fine-tuning epochs of each try (stage 2).")
    final_epochs: int | None = setting(None, min=1,
                                       help="Train the pick again, after the short tries chose it, with this many epochs "
                                            "(UVC's search, DynamicViT's training) for the answer: the full recipe [default: "
                                            "--epochs; no final training unless this or --final-finetune-epochs is given].")
    final_finetune_epochs: int | None = setting(None, min=0,
                                                help="UVC's fine-tuning epochs of that final training [default: "
                                                     "--finetune-epochs].")
    train_batch_size: int = setting(64, min=1, help="Training batch of every try.")
    lr: float | None = setting(None, min=0, min_open=True, help="Peak learning rate of every try [default: each method's].")
    holdout: float = setting(0.1, min=0, max=1, min_open=True, max_open=True,
                             help="Fraction of the train split kept apart to choose on (never trained on, never the "
                                  "reported accuracy's val images).")
    calib_samples: int = setting(256, min=1, help="INT8: calibration images (train split, never the held-out ones).")
    block_drop: float = setting(0.5, min=0,
                                help="INT8: a block stays float when quantizing it alone costs more than this many "
                                     "top-1 points on the held-out images (100: never for accuracy, as for speed-only "
                                     "runs on synthetic data).")
    tolerance: float = setting(0.1, min=0, max=1, help="The measured speedup must lie within this relative tolerance of S.")
    rounds: int = setting(3, min=1, help="At most this many times: measure the pick, recalibrate, re-land, fine-tune.")
    probe_seconds: float = setting(1.0, min=0, help="Timed seconds per latency probe (vitc profile --min-seconds).")
    token_points: int = setting(4, min=2, max=32, help="Token counts in each latency profile's grid.")
    bench_seconds: float = setting(2.0, min=0, help="Timed seconds of each target per batch in the paired benches.")
    profiles: str | None = setting(None, metavar="DIR",
                                   help="Keep the latency profiles (and their probes) here, named by model, backend, "
                                        "precision, batch, threads and grid, and reuse them in later tunes [default: "
                                        "OUT/profiles, measured afresh].")
    seed: int = setting(0, min=0, help="Seed of every try.")

    def rules(self, label: Label) -> None:
        backend, sep, precision = self.reference.partition(":")
        if not sep or backend not in BACKENDS or precision not in BACKENDS[backend].precisions:
            raise UsageError(f"{label('reference')} must be BACKEND:PRECISION (e.g. {REFERENCE_BACKEND}:fp32), got "
                             f"{self.reference!r}")
        for key, values in (("backends", self.backends), ("precisions", self.precisions), ("methods", self.methods)):
            dup = next((v for v in values if values.count(v) > 1), None)
            if dup is not None:
                raise UsageError(f"{label(key)} lists {dup} twice")
        if not self.methods:
            raise UsageError(f"{label('methods')} must list at least one method")

    @property
    def trains_final(self) -> bool:
        """Whether the pick is trained again with the full recipe before the answer."""
        return self.final_epochs is not None or self.final_finetune_epochs is not None

    @property
    def reference_pair(self) -> tuple[str, str]:
        backend, _, precision = self.reference.partition(":")
        return backend, precision

    def summary(self) -> dict[str, Any]:
        from vitc.core.settings import to_dict

        return to_dict(self)


__all__ = ["PRECISIONS", "TuneSettings"]
