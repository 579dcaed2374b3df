"""``vitc train``: supervised training of a ViT on a data source, written as a vitc artifact."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from vitc.core.artifacts import save_model
from vitc.core.data import parse_data
from vitc.core.fileio import check_output_dir, write_json
from vitc.core.models import resolve_model
from vitc.core.provenance import provenance
from vitc.train.distributed import shutdown
from vitc.train.loop import METRICS_NAME, Objective, fit, seed_everything
from vitc.train.settings import TrainSettings

MODEL_NAME = "model.safetensors"


def train_classifier(
    model_name: str, data: str, out: str | Path, settings: TrainSettings | None = None, *, pretrained: bool = False,
    checkpoint: str | Path | None = None, resume: bool = False, **options: Any,
) -> dict[str, Any] | None:
    """Train and write ``OUT/model.safetensors``; returns a summary on rank 0 (None on other ranks).

    ``options`` replace fields of ``settings`` (:class:`~vitc.train.settings.TrainSettings`).
    """
    import os

    out = check_output_dir(out)
    cfg = TrainSettings.with_options(settings, **options)
    source = parse_data(data)
    seed_everything(cfg.seed)  # the initial weights of a new model come from --seed too
    model, spec = resolve_model(model_name, pretrained=pretrained, checkpoint=checkpoint,
                                num_classes=source.head_classes())
    train_set = source.dataset(spec, "train", train_transforms=True)
    val_set = source.dataset(spec, "val")
    t0 = time.perf_counter()
    try:
        model, history = fit(model, Objective(cfg.label_smoothing), train_set, val_set, cfg, out, resume=resume)
        if int(os.environ.get("RANK", "0")) != 0:
            return None
        final = history[-1] if history else {}
        meta = {"trained_on": str(source), "epochs": cfg.epochs, "val_top1": final.get("val_top1"),
                "provenance": provenance("train", cfg, data=str(source), parent=model_name)}
        artifact = save_model(out / MODEL_NAME, model.cpu(), spec, meta=meta)
        result = {
            "artifact": str(artifact),
            "val_top1": final.get("val_top1"),  # None (JSON null) when no epoch ran
            "val_top5": final.get("val_top5"),
            "epochs": cfg.epochs,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        write_json(out / METRICS_NAME, {"method": "train", "epochs": history, "final": result})
        return result
    finally:
        shutdown()
