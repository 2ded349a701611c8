"""`parity --plot FILE.png`: the record as a picture (matplotlib, the optional `plot` extra).

Left: every stage's largest difference on a log scale, the tolerance as a line, the first failing
stage marked. For the whole detector, when its outputs were kept: the original's and the converted
model's masks and boxes over the input image, and their difference.
"""

from __future__ import annotations

import math
from pathlib import Path

from litetext_convert.errors import LitetextError
from litetext_convert.folder.verdict import record_verdict

INSTALL_HINT = "pip install -e '.[plot]'"
PLOT_MARK = b"Software\x00litetext"  # the PNG text chunk savefig writes: a plot litetext may replace
FLOOR = 1e-18  # exact zeros drawn at the bottom of the log axis


def check_plot_target(path: Path) -> None:
    """Before any work: matplotlib importable, a .png name, a folder to write into."""
    import importlib.util

    from litetext_convert.write.shards import check_report_path

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise LitetextError(f"--plot {path}: give a .png file name")
    check_report_path(path, ours=lambda data: PLOT_MARK in data, what="plot")  # never over a user's file
    if importlib.util.find_spec("matplotlib") is None:
        raise LitetextError("--plot needs matplotlib, which is not installed", hint=INSTALL_HINT)
    if not path.parent.absolute().is_dir():
        raise LitetextError(f"--plot {path}: the folder {path.parent} does not exist")


def plot_record(record: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    panels = [("text encoder", record.get("stages") or [], record_verdict(record).first_failure)]
    detector = record.get("detector")
    if detector and detector.get("stages"):
        failure = next((s["name"] for s in detector["stages"] if not s["passed"]), None)
        panels.append(("whole detector", detector["stages"], failure))
    outputs = record.get("_detector_outputs")
    rows = len(panels) + (1 if outputs else 0)
    figure = plt.figure(figsize=(11, 4.2 * rows), layout="constrained")
    grid = figure.add_gridspec(rows, 3)
    for row, (title, stages, failure) in enumerate(panels):
        _stage_panel(figure.add_subplot(grid[row, :]), title, stages, failure, record)
    if outputs:
        _detector_images(figure, grid, len(panels), outputs)
    found = record_verdict(record)
    verdict = "PASS" if found.passed else f"FAIL at {found.first_failure}"
    figure.suptitle(f"litetext parity: {record.get('scope')} scope, {record.get('dtype')}: {verdict}")
    figure.savefig(str(path), dpi=110, metadata={"Software": "litetext"})
    plt.close(figure)
    return Path(path)


def _stage_panel(axes, title: str, stages: list[dict], failure: str | None, record: dict):
    names = [s["name"] for s in stages]
    values = [max(float(s["max_abs"]), FLOOR) if math.isfinite(s["max_abs"]) else 1e3 for s in stages]
    allowed = [float(s.get("atol", 0.0)) + float(s.get("rtol", 0.0)) * float(s.get("reference_max", 0.0)) for s in stages]
    colours = ["tab:red" if not s["passed"] else "tab:blue" for s in stages]
    positions = range(len(stages))
    axes.scatter(positions, values, c=colours, zorder=3, label="max |original - converted|\n(exact 0 drawn at the bottom)")
    axes.plot(positions, [max(a, FLOOR) for a in allowed], color="tab:orange", linestyle="--",
              label="tolerance\n(atol + rtol * max |original|)")
    if failure in names:
        index = names.index(failure)
        axes.axvline(index, color="tab:red", alpha=0.4)
        axes.annotate(f"first failure: {failure}", (index, values[index]), textcoords="offset points", xytext=(6, 8),
                      color="tab:red")
    axes.set_yscale("log")
    axes.set_title(f"{title}: largest difference per stage")
    axes.set_xticks(list(positions))
    axes.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    axes.set_ylabel("max abs difference (log)")
    axes.grid(True, which="major", axis="y", alpha=0.3)
    # Outside the axes, to their right: inside, wherever it goes, some stage's point can sit under it.
    return axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8)


def picture_inputs(pixel_values, original: dict, converted: dict, top: int = 3) -> dict:
    """What the detector panel draws, small enough to keep: the input image (HxWx3 in [0, 1]), and per
    side the mask probabilities of the original's most confident query and the boxes (xyxy,
    normalised) of its `top` most confident queries. Both sides show the same queries."""
    import torch

    image = pixel_values[0].detach().to(torch.float64).permute(1, 2, 0)
    image = (image - image.min()) / (image.max() - image.min() + 1e-12)
    scores = original["pred_logits"][0].detach().reshape(-1).to(torch.float64)
    order = torch.argsort(scores, descending=True)[:top]
    sides = {}
    for name, outputs in (("original", original), ("converted", converted)):
        sides[name] = {
            "masks": outputs["pred_masks"][0, order[0]].detach().to(torch.float64).sigmoid().numpy(),
            "boxes": outputs["pred_boxes"][0, order].detach().to(torch.float64).numpy(),
        }
    return {"image": image.numpy(), **sides}


def _detector_images(figure, grid, row: int, outputs: dict) -> None:
    """outputs: picture_inputs()'s dict."""
    import numpy as np

    image = np.asarray(outputs["image"], dtype=float)
    sides = [("original", outputs["original"]), ("converted", outputs["converted"])]
    masks = []
    for column, (name, side) in enumerate(sides):
        axes = figure.add_subplot(grid[row, column])
        mask = np.asarray(side["masks"], dtype=float)
        masks.append(mask)
        axes.imshow(image)
        axes.imshow(mask, alpha=0.45, cmap="viridis", extent=(0, image.shape[1], image.shape[0], 0))
        height, width = image.shape[:2]
        for x0, y0, x1, y1 in np.asarray(side.get("boxes", []), dtype=float).reshape(-1, 4):
            axes.add_patch(_rectangle(x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height))
        axes.set_title(f"{name}: mask, boxes")
        axes.axis("off")
    axes = figure.add_subplot(grid[row, 2])
    difference = np.abs(masks[0] - masks[1])
    shown = axes.imshow(difference, cmap="magma")
    figure.colorbar(shown, ax=axes, shrink=0.8)
    axes.set_title(f"|difference| (max {difference.max():.2e})")
    axes.axis("off")


def _rectangle(x0: float, y0: float, width: float, height: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x0, y0), width, height, fill=False, edgecolor="tab:red", linewidth=1.2)
