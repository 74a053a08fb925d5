"""Plotly figures of the training and models pages: metrics per epoch, confusion matrices and
threshold curves. Plain functions from data to figures (no Streamlit here), so both pages share them."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PANELS = (
    ("Loss", (("train_loss", "train"), ("val_loss", "val"))),
    ("Accuracy", (("val_accuracy", "val accuracy"), ("val_top5", "val top-5"))),
    ("F1", (("val_f1", "val macro F1"), ("val_f1_micro", "val micro F1"), ("val_map", "val mAP"))),
    ("Learning rate", (("lr", "lr"),)),
)


def history_figure(history: list[dict[str, Any]], best_epoch: int | None = None) -> go.Figure:
    """Loss, accuracy, F1 and learning rate per epoch in a 2×2 grid; the best epoch is marked."""
    figure = make_subplots(rows=2, cols=2, subplot_titles=[title for title, _ in PANELS],
                           horizontal_spacing=0.08, vertical_spacing=0.14)
    epochs = [entry.get("epoch") for entry in history]
    for index, (_title, series) in enumerate(PANELS):
        row, col = index // 2 + 1, index % 2 + 1
        for key, label in series:
            values = [entry.get(key) for entry in history]
            if all(value is None for value in values):
                continue
            figure.add_trace(go.Scatter(x=epochs, y=values, mode="lines+markers", name=label,
                                        legendgroup=label), row=row, col=col)
        if best_epoch:
            figure.add_vline(x=best_epoch, line_dash="dot", line_color="gray", row=row, col=col)
    figure.update_yaxes(type="log", row=2, col=2)
    figure.update_xaxes(title_text="epoch", dtick=max(1, len(epochs) // 10) if epochs else 1)
    figure.update_layout(height=560, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                         legend={"orientation": "h", "y": -0.12})
    return figure


def confusion_figure(matrix: list[list[int]], class_names: list[str], *, normalized: bool) -> go.Figure:
    """Rows: true class, columns: predicted class. Normalized: each row divided by its total."""
    counts = np.asarray(matrix, dtype=float)
    if normalized:
        totals = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        text = [[f"{v:.0%}" for v in row] for row in values]
    else:
        values = counts
        text = [[f"{int(v)}" for v in row] for row in values]
    figure = go.Figure(go.Heatmap(
        z=values, x=class_names, y=class_names, text=text, texttemplate="%{text}", colorscale="Blues",
        hovertemplate="true %{y}<br>predicted %{x}<br>%{text}<extra></extra>",
        zmin=0, zmax=1 if normalized else None,
    ))
    size = max(360, min(900, 60 * len(class_names) + 160))
    figure.update_layout(height=size, xaxis_title="predicted", yaxis_title="true",
                         yaxis={"autorange": "reversed"}, margin={"l": 10, "r": 10, "t": 20, "b": 10})
    return figure


def threshold_figure(grid: np.ndarray, precision: np.ndarray, recall: np.ndarray, f1: np.ndarray, *,
                     chosen: float | None, extra: dict[str, np.ndarray] | None = None,
                     title: str = "") -> go.Figure:
    """Precision, recall and F1 of one class (or the macro average) against the threshold."""
    figure = go.Figure()
    for name, values in (("precision", precision), ("recall", recall), ("F1", f1), *(extra or {}).items()):
        figure.add_trace(go.Scatter(x=grid, y=np.where(np.isnan(values), None, values), mode="lines", name=name))
    if chosen is not None:
        figure.add_vline(x=chosen, line_dash="dash", line_color="red", annotation_text=f"{chosen:.2f}")
    figure.update_layout(height=360, title=title, xaxis_title="threshold", yaxis={"range": [0, 1.02]},
                         margin={"l": 10, "r": 10, "t": 40 if title else 20, "b": 10})
    return figure


def lr_range_figure(test: dict[str, Any]) -> go.Figure:
    """The LR range test: smoothed loss against the learning rate (log axis), the chosen rate marked."""
    figure = go.Figure(go.Scatter(x=test["lr"], y=test["loss"], mode="lines", name="loss"))
    figure.add_vline(x=test["chosen"], line_dash="dash", line_color="red", annotation_text=f"{test['chosen']:g}")
    figure.update_xaxes(type="log", title_text="learning rate")
    figure.update_layout(height=320, yaxis_title="smoothed loss", margin={"l": 10, "r": 10, "t": 20, "b": 10})
    return figure
