"""Figures: one palette in class order everywhere, the failing classes marked, and nothing that
stops scaling with the class count."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from seglab.figures import run as run_figures
from seglab.figures import style
from seglab.figures import sweep as sweep_figures

CLASSES = ["background", "disk", "square", "bar", "speck"]


def history(classes, runs=("a",), epochs=3):
    rows = [
        {"run_name": run, "metric": "val/iou", "class": cls, "epoch": epoch, "value": value}
        for run in runs
        for c, cls in enumerate(classes)
        for epoch in range(1, epochs + 1)
        for value in [0.0 if cls == "speck" else 0.2 * c + 0.1 * epoch]
    ]
    return pd.DataFrame(rows)


def test_class_curves_colour_each_class_by_its_index_whatever_the_history_order():
    alphabetical = history(sorted(CLASSES))  # MLflow returns keys sorted by name
    figure = sweep_figures.class_iou_curves(alphabetical, CLASSES)
    legend = figure.legends[0]
    colours = {
        t.get_text(): to_rgb(h.get_color())
        for t, h in zip(legend.texts, legend.legend_handles, strict=True)
    }
    for index, cls in enumerate(CLASSES):
        np.testing.assert_allclose(colours[cls], style.palette(5)[index])
    (ax,) = [a for a in figure.axes if a.get_title()]
    assert ax.get_title() == "a\nworst: speck"
    plt.close(figure)


def test_loss_and_iou_marks_the_worst_and_hidden_classes_and_labels_the_final_loss():
    ious = {cls: [0.1 + 0.1 * c, 0.2 + 0.2 * c] for c, cls in enumerate(CLASSES)}
    ious["speck"] = [0.0, 0.0]
    figure = run_figures.loss_and_class_iou(
        [1, 2], {"val/loss": [0.5, 0.0215]}, ious, "run: hidden failures: speck", ["speck"]
    )
    ax_loss, ax_iou = figure.axes[:2]
    labels = [t.get_text() for t in ax_iou.get_legend().texts]
    assert "speck (worst, hidden)" in labels
    (speck,) = [line for line in ax_iou.lines if line.get_label() == "speck (worst, hidden)"]
    assert speck.get_linestyle() == "--" and speck.get_linewidth() == 3
    assert "0.0215" in [t.get_text() for t in ax_loss.texts]  # readable off the log axis
    assert figure._suptitle.get_text() == "run: hidden failures: speck"
    plt.close(figure)


def test_past_ten_classes_only_the_worst_and_hidden_get_colours():
    names = [f"c{i}" for i in range(150)]
    ious = {name: [0.9, 0.5 + i / 400] for i, name in enumerate(names)}
    figure = run_figures.loss_and_class_iou([1, 2], {"val/loss": [1.0, 0.5]}, ious, hidden=["c149"])
    ax_iou = figure.axes[1]
    labelled = [t.get_text() for t in ax_iou.get_legend().texts]
    assert len(labelled) == style.MAX_CURVES + 1  # the ten worst, and the hidden one
    assert "c0 (worst)" in labelled and "c149 (hidden)" in labelled
    assert len(ax_iou.lines) == len(labelled)
    (grey,) = ax_iou.collections  # the other classes, one grey artist
    assert len(grey.get_segments()) == 150 - len(labelled)
    np.testing.assert_allclose(grey.get_segments()[0], [[1, 0.9], [2, 0.5 + 10 / 400]])  # c10
    np.testing.assert_allclose(grey.get_colors()[0][:3], to_rgb("0.8"))
    plt.close(figure)


def overlay_legend(classes, truths, predictions):
    images = np.zeros((*truths.shape, 3))
    figure = run_figures.overlays(images, truths, predictions, [f"c{i}" for i in range(classes)])
    (legend,) = figure.legends
    names = [t.get_text() for t in legend.texts]
    colours = [to_rgb(h.get_facecolor()) for h in legend.legend_handles]
    plt.close(figure)
    return names, colours, legend.get_title().get_text()


def test_overlay_legend_lists_every_class_while_few():
    truths = np.zeros((2, 4, 4), int)
    names, colours, title = overlay_legend(5, truths, truths)
    assert names == [f"c{i}" for i in range(5)]
    np.testing.assert_allclose(colours, style.palette(5))
    assert title == ""


def test_overlay_legend_past_twenty_classes_lists_the_most_shown_in_class_order():
    # Class c has c + 1 true pixels for c < 30, and 1 predicted pixel of class 149: the 20
    # classes with most pixels are 10..29 (149 has one pixel, fewer than any of them).
    truths = np.concatenate([np.full(c + 1, c) for c in range(30)])
    truths = np.pad(truths, (0, 480 - truths.size), constant_values=255).reshape(2, 16, 15)
    predictions = np.full_like(truths, 255)
    predictions[0, 0, 0] = 149
    names, colours, title = overlay_legend(150, truths, predictions)
    assert names == [f"c{i}" for i in range(10, 30)]
    np.testing.assert_allclose(colours, style.palette(150)[10:30])
    assert title == "the 20 classes with most pixels shown, of 150"


@pytest.mark.parametrize(("classes", "texts"), [(5, 25), (150, 0)])
def test_confusion_matrix_writes_cells_only_while_they_are_readable(classes, texts):
    cm = np.random.default_rng(0).integers(0, 50, (classes, classes))
    figure = run_figures.confusion_matrix(cm, [f"c{i}" for i in range(classes)])
    assert len(figure.axes[0].texts) == texts
    width, height = figure.get_size_inches()
    assert width <= 15 and height <= 14
    plt.close(figure)


def test_loss_against_worst_iou_has_a_panel_per_loss_and_marks_hidden_failures():
    runs = pd.DataFrame(
        {
            "loss": ["ce", "ce", "dice"],
            "val_loss": [0.02, 0.03, 0.7],
            "min_iou": [0.0, 0.5, 0.1],
            "run_name": ["ce,none", "ce,mf", "dice,mf"],
            "hidden_classes": ["speck", "", "disk"],
        }
    )
    figure = sweep_figures.loss_vs_worst_iou(runs)
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["loss=ce", "loss=dice"]
    crosses = panels[0].collections[1].get_offsets()
    np.testing.assert_allclose(crosses, [[0.02, 0.0]])  # the CE run with a hidden failure
    plt.close(figure)


def test_loss_against_worst_iou_labels_each_configuration_once_with_its_seed_interval():
    runs = pd.DataFrame(
        {
            "loss": ["ce"] * 4,
            "val_loss": [0.30, 0.40, 0.90, 1.00],
            "min_iou": [0.0, 0.02, 0.05, 0.07],
            "run_name": [f"seed={i}" for i in range(4)],
            "configuration": ["loss=ce,cw=none"] * 2 + ["loss=ce,cw=mf"] * 2,
            "hidden_classes": ["pole"] * 4,
        }
    )
    figure = sweep_figures.loss_vs_worst_iou(runs)
    panel = next(ax for ax in figure.axes if ax.get_title() == "loss=ce")
    labels = {t.get_text(): t.xy for t in panel.texts}
    assert set(labels) == {"cw=none", "cw=mf"}  # once each, without the panel's loss
    np.testing.assert_allclose(labels["cw=mf"], (0.95, 0.06))
    # t(0.975, df=1) = 12.706 times the standard error of two values 0.1 apart: 0.6353
    bars = [c for c in panel.containers if hasattr(c, "lines")]
    assert len(bars) == 2
    x_bar = bars[1].lines[2][0].get_segments()[0]
    np.testing.assert_allclose(x_bar[:, 0], [0.95 - 0.6353, 0.95 + 0.6353], rtol=1e-3)
    plt.close(figure)


def test_the_scatter_colours_a_run_by_its_worst_class_and_marks_a_hidden_failure_by_shape():
    runs = pd.DataFrame(
        {
            "loss": ["ce", "ce"],
            "val_loss": [0.02, 0.03],
            "min_iou": [0.0, 0.5],
            "run_name": ["ce,none", "ce,mf"],
            "hidden_classes": ["speck", ""],
            "worst_class": ["speck", "disk"],
        }
    )
    figure = sweep_figures.loss_vs_worst_iou(runs, CLASSES)
    (panel,) = [ax for ax in figure.axes if ax.get_title() == "loss=ce"]
    dots, crosses = panel.collections[:2]
    np.testing.assert_allclose(dots.get_facecolors()[0][:3], style.palette(5)[1])  # disk
    np.testing.assert_allclose(crosses.get_facecolors()[0][:3], style.palette(5)[4])  # speck
    np.testing.assert_allclose(crosses.get_offsets(), [[0.02, 0.0]])
    labels = [t.get_text() for t in panel.get_legend().texts]
    assert labels == ["no hidden failure", "hidden failure", "worst: disk", "worst: speck"]
    plt.close(figure)


def test_class_curves_follow_the_tables_run_order_with_a_legend_of_even_lines():
    frame = history(CLASSES, runs=("b", "a", "d", "c"))
    figure = sweep_figures.class_iou_curves(frame, CLASSES, ["a", "b", "c", "d"])
    titled = [ax.get_title().split("\n")[0] for ax in figure.axes if ax.get_title()]
    assert titled == ["a", "b", "c", "d"]  # 2 x 2: no empty panel
    assert len(figure.axes) == 4
    widths = {h.get_linewidth() for h in figure.legends[0].legend_handles}
    assert widths == {1.5}  # the thick line is each panel's own worst class, not the legend's
    plt.close(figure)


def test_the_loss_beside_a_class_draws_both_runs_in_both_panels():
    rows = [
        {"run_name": run, "metric": metric, "class": cls, "epoch": epoch, "value": value}
        for run, ious in (("low", [0.0, 0.0]), ("best", [0.2, 0.5]))
        for epoch in (1, 2)
        for metric, cls, value in (
            ("val/loss", "", 1.0 / epoch),
            ("val/iou", "speck", ious[epoch - 1]),
            ("val/iou", "disk", 0.9),
        )
    ]
    figure = sweep_figures.loss_beside_class(pd.DataFrame(rows), ["low", "best"], "speck", "t")
    loss, iou = figure.axes[:2]
    assert (loss.get_title(), iou.get_title()) == ("val/loss", "val/iou/speck")
    np.testing.assert_allclose(iou.lines[1].get_ydata(), [0.2, 0.5])  # best's speck, not disk
    np.testing.assert_allclose(loss.lines[0].get_ydata(), [1.0, 0.5])
    assert [line.get_label() for line in iou.lines] == ["low", "best"]
    assert loss.lines[0].get_color() != loss.lines[1].get_color()
    plt.close(figure)
