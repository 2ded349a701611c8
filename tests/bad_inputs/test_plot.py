"""`parity --plot`: the legend never covers a stage's point (issue 25, item 10). Needs matplotlib
(the plot extra; the original environment has it)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("corner", ["upper left", "upper right", "lower left", "lower right"])
def test_the_legend_sits_outside_the_axes(corner):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from litetext_convert.parity.plot import _stage_panel

    # Points in the corner a legend inside the axes would take.
    high = corner.startswith("upper")
    left = corner.endswith("left")
    stages = [
        {"name": f"text.layer.{i}", "max_abs": (1e-1 if high else 1e-12) if (i < 3) == left else 1e-6,
         "passed": True, "atol": 1e-5, "rtol": 1e-5, "reference_max": 1.0}
        for i in range(12)
    ]
    figure = plt.figure(figsize=(11, 4.2), layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    legend = _stage_panel(axes, "text encoder", stages, None, {})
    figure.canvas.draw()
    box, data = legend.get_window_extent(), axes.get_window_extent()
    plt.close(figure)
    assert box.x0 >= data.x1, f"the legend ({box}) overlaps the axes ({data})"
