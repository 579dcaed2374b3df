"""``vitc export``: :func:`vitc.onnx.export.export_onnx`, then one ONNX Runtime vs PyTorch parity check of the
file before it takes its name.

The export itself is the onnx layer's; the parity check runs a backend against PyTorch, which only the
checks layer may do, so the step that joins them lives here.
"""

from __future__ import annotations

import os
from typing import Any

EXPORT_VERIFY_BATCH = 3  # export's own parity check runs at a batch that is neither 1 nor the trace batch
EXPORT_VERIFY_BATCHES = 2


def export_verified(source: str | os.PathLike[str], out: str | os.PathLike[str], settings: Any = None, *,
                    pretrained: bool = False, checkpoint: str | None = None, **options: Any) -> dict[str, Any]:
    """Export ``source`` to ``out`` and (``settings.verify``) check ONNX Runtime against PyTorch on the written
    file at the precision's default tolerances; a failure writes nothing.

    Args:
        source: a vitc artifact of any kind, or a timm name (with ``pretrained``/``checkpoint``).
        out: the ONNX file to write (atomically, only when the checks pass).
        settings: :class:`~vitc.onnx.settings.ExportSettings`; ``options`` replace some of its fields.

    Returns:
        The export report, with the parity check's under ``verify`` (None when not run).
    """
    from vitc.checks.verify import verify_onnx
    from vitc.core.errors import CheckFailed
    from vitc.onnx.export import export_onnx
    from vitc.onnx.settings import ExportSettings
    from vitc.onnx.source import Deployable

    s = ExportSettings.with_options(settings, **options)

    def parity(tmp: Any, dep: Deployable, final: Any) -> dict[str, Any]:
        report = verify_onnx(tmp, dep, data=s.data, batches=EXPORT_VERIFY_BATCHES,
                             batch_size=s.static_batch or EXPORT_VERIFY_BATCH)
        report.onnx = report.onnx_backend["path"] = str(final)  # name the file it becomes, not the temp file
        if not report:
            raise CheckFailed(f"{final} not written: {report.summary()}")
        return report.to_dict()

    return export_onnx(source, out, s, pretrained=pretrained, checkpoint=checkpoint,
                       parity=parity if s.verify else None)


__all__ = ["EXPORT_VERIFY_BATCH", "EXPORT_VERIFY_BATCHES", "export_verified"]
