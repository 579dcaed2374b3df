"""``vitc profile``: a measured latency model of a ViT on the backend it will run on, and predictions from one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vitc.checks.settings import ProfileSettings
from vitc.cli.common import emit, json_option, model_options
from vitc.cli.options import collect, settings_options
from vitc.core.tables import format_table


@click.command()
@click.argument("targets", nargs=-1, metavar="MODEL | --predict LATENCY.json TARGET...")
@settings_options(ProfileSettings)
@click.option("--out", "-o", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The latency profile to write (.json); a killed run resumes from OUT.partial.json.")
@click.option("--predict", "predict", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="LATENCY.json",
              help="Do not measure: predict the latency and the speedup over dense of each TARGET (artifacts of any "
                   "kind, materialized or not, ONNX files, model names) from this profile.")
@click.option("--probe-cache", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Keep the compiled probes here by shape and precision, so a profile at another batch size, thread "
                   "count or device skips compiling them again (like a TensorRT timing cache).")
@model_options
@json_option
@click.pass_context
def profile(ctx: click.Context, targets: tuple[str, ...], out: Path | None, predict: Path | None, probe_cache: Path | None,
            pretrained: bool, checkpoint: Path | None, as_json: bool, **params: Any) -> None:
    """Measure how long each block shape takes on the target backend and fit a latency model.

    \b
    vitc profile deit_small_patch16_224 --backend onnxruntime --batch-size 32 -o latency.json
    vitc profile --predict latency.json runs/uvc/materialized.safetensors model.onnx

    MODEL is the dense model (timm name, vitc config or plain artifact). Probes — small ViTs of its width,
    head size and patch size at a coarse grid of token counts (from the input size), head counts and MLP
    widths — are compiled for --backend as a deployed model would be and timed with the bench protocol, each
    alternately with one reference probe, so drifts of a shared machine cancel. Run it on the machine and
    threads you deploy to, with nothing else busy (DeiT-S on 2 CPU threads: ~2 min at batch 1, ~4 at 32). The
    fit is monotone and interpolates between grid points; one factor calibrates it to the dense model's
    measured latency. The JSON records the device, backend, versions, threads, precision, batch, the grid
    and every probe's timing. `vitc compress uvc --target-speedup S --latency latency.json`, `vitc
    materialize --target-speedup S --latency latency.json` and `vitc bench --latency` use it.
    """
    from vitc.core.errors import UsageError

    if predict is not None:
        if not targets:
            raise UsageError("--predict needs one or more TARGETs to predict")
        if out is not None:
            raise UsageError("--predict prints predictions; -o applies to profiling")
        from vitc.checks.predict import predict_targets

        emit(predict_targets(predict, list(targets)), as_json, _human_predictions)
        return
    if len(targets) != 1:
        raise UsageError("give one MODEL to profile (or --predict LATENCY.json TARGET...)")
    if out is None:
        raise UsageError("missing -o/--out: the latency profile (.json) to write")
    settings = collect(ProfileSettings, params, ctx)
    from vitc.checks.profile import profile_latency

    result = profile_latency(targets[0], out, settings, pretrained=pretrained, checkpoint=str(checkpoint) if checkpoint else None,
                             probe_cache=probe_cache)
    emit(result, as_json, lambda r: _human_profile(r, out))


def _human_profile(r: dict[str, Any], out: Path) -> str:
    t, fit = r["target"], r["fit"]
    return (f"wrote {out}: {r['model']} on {t['backend']} ({t['device']}, {t['precision']}, batch {t['batch_size']}), "
            f"{len(r['measurements'])} probes in {r['seconds']:.0f} s\n"
            f"dense {fit['dense_ms']:.3f} ms, fixed part {fit['fixed_ms']:.3f} ms, calibration {fit['calibration']:.3f}")


def _human_predictions(r: dict[str, Any]) -> str:
    p = r["profile"]
    head = (f"predicted by {r['latency']} ({p['model']} on {p['backend']}, {p['device']}, {p['precision']}, "
            f"batch {p['batch_size']}; dense {r['dense_ms']:.3f} ms)\n")
    return head + format_table(r["predictions"], [("target", "target"), ("latency_ms", "latency ms"),
                                                  ("speedup", "speedup vs dense"), ("blocks", "blocks")])
