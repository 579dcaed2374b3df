"""Report rows → markdown table, speedups over dense at the same backend/precision, a readable PNG."""

from __future__ import annotations

import json

from vitc.pipeline.report import add_speedups, markdown_table, write_report


def _rows():
    common = {"params": 1_000_000, "macs": 2_000_000, "top1_backend": "onnxruntime fp32", "verify": "PASS"}
    return [
        {**common, "variant": "dense", "method": "dense", "format": "onnx fp32", "backend": "onnxruntime",
         "precision": "fp32", "macs_ratio": 1.0, "top1": 97.0, "throughput": {"1": 100.0, "32": 1000.0}},
        {**common, "variant": "uvc-0.50", "method": "uvc", "format": "onnx fp32", "backend": "onnxruntime",
         "precision": "fp32", "macs_ratio": 0.5, "top1": 96.0, "throughput": {"1": 150.0, "32": 1800.0}},
        {**common, "variant": "uvc-0.50", "method": "uvc", "format": "onnx int8", "backend": "onnxruntime",
         "precision": "int8", "macs_ratio": 0.5, "top1": 95.5, "throughput": {"32": 2500.0}},
    ]


def test_speedup_is_over_dense_with_same_backend_and_precision():
    rows = _rows()
    add_speedups(rows)
    assert rows[0]["speedup"] == {"1": 1.0, "32": 1.0}
    assert rows[1]["speedup"] == {"1": 1.5, "32": 1.8}
    assert rows[2]["speedup"] == {}  # no dense int8 row to compare against


def test_markdown_table_has_every_row_and_batch_column():
    rows = _rows()
    add_speedups(rows)
    table = markdown_table(rows).splitlines()
    assert "img/s @1" in table[0] and "img/s @32" in table[0] and "speedup @32" in table[0]
    assert len(table) == 2 + len(rows)
    assert "| uvc-0.50 | onnx fp32 |" in table[3] and "1.80x" in table[3]


def test_write_report_writes_all_three_files(tmp_path):
    files = write_report(tmp_path, _rows(), {"model": "vit-nano", "data": "digits"}, {"torch": "x"})
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["rows"]) == 3
    assert (tmp_path / "report.md").read_text().startswith("# vitc report: vit-nano on digits")
    png = (tmp_path / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert set(files) == {"json", "markdown", "plot"}


def test_point_labels_stay_apart_and_inside_the_plot():
    """Labels of points at the same place are moved apart, none over another, the title or outside the axes (the
    demo's pareto.png printed labels over the title and each other)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vitc.core.plots import place_labels

    fig, ax = plt.subplots()
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_title("a title")
    names = ["dynamicvit-keep0.90", "dense", "uvc-0.50", "uvc-0.50+dynamicvit-keep0.70"]
    labels = [ax.annotate(name, (50 + i, 99), textcoords="offset points", xytext=(6, 6)) for i, name in enumerate(names)]
    renderer = fig.canvas.get_renderer()
    assert labels[0].get_window_extent(renderer).overlaps(labels[1].get_window_extent(renderer))
    points = [(50 + i, 99) for i in range(len(names))] + [(56, 97)]  # one more marker where a label would go
    place_labels(fig, ax, labels, points)
    boxes = [t.get_window_extent(renderer) for t in labels]
    area, title = ax.get_window_extent(renderer), ax.title.get_window_extent(renderer)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    from matplotlib.transforms import Bbox

    markers = [Bbox.from_extents(*(ax.transData.transform(p) - 7), *(ax.transData.transform(p) + 7)) for p in points]
    assert not any(b.overlaps(m) for b in boxes for m in markers)  # no label over a marker
    assert all(area.y1 >= b.y1 and not b.overlaps(title) for b in boxes)  # points at the top edge: labels go below
    plt.close(fig)


def test_the_pareto_front_keeps_only_points_nothing_beats():
    from vitc.core.plots import pareto_front

    points = [(1.0, 90.0), (2.0, 89.0), (1.5, 85.0), (3.0, 80.0), (2.5, 70.0)]
    assert pareto_front(points) == [0, 1, 3]
