"""Pictures people would rather look at than read: ROC curves, score histograms, attention maps.

matplotlib with the Agg backend only (no display needed); attention overlays are plain
numpy images so that predict can also draw them into video frames.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from etils import epath

from mat_jax import metrics as metrics_lib
from mat_jax import resample


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def upsample(amap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (align_corners) upsampling of an (h, w) map, as the model itself resizes maps."""
    mh = resample.bilinear_matrix(amap.shape[0], size[0])
    mw = resample.bilinear_matrix(amap.shape[1], size[1])
    return mh @ np.asarray(amap, np.float64) @ mw.T


def overlay(face: np.ndarray, amap: np.ndarray, alpha: float = 0.5, vmax: float | None = None) -> np.ndarray:
    """An (h, w) attention map as a 'jet' heat map over an RGB uint8 face, uint8 result.

    Maps are scaled by `vmax` (default: the map's own maximum), so with a shared vmax
    the heads of one face can be compared by brightness.
    """
    from matplotlib import colormaps

    up = upsample(amap, face.shape[:2])
    top = float(vmax if vmax is not None else up.max())
    heat = colormaps["jet"](np.clip(up / top, 0.0, 1.0) if top > 0 else np.zeros_like(up))[..., :3]
    out = (1.0 - alpha) * face.astype(np.float64) / 255.0 + alpha * heat
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def attention_grid(face: np.ndarray, maps: np.ndarray, gap: int = 4) -> np.ndarray:
    """The face, then one overlay per head (maps (h, w, M)), side by side with a white gap."""
    m = maps.shape[-1]
    vmax = float(np.max(maps))
    tiles = [face.astype(np.uint8)] + [overlay(face, maps[..., i], vmax=vmax) for i in range(m)]
    h = face.shape[0]
    spacer = np.full((h, gap, 3), 255, np.uint8)
    row = []
    for i, tile in enumerate(tiles):
        row.append(tile)
        if i < len(tiles) - 1:
            row.append(spacer)
    return np.concatenate(row, axis=1)


def attention_sheet(path, faces: Sequence[np.ndarray], maps: Sequence[np.ndarray],
                    captions: Sequence[str]) -> None:
    """Rows of `attention_grid`, one per face, with a caption each; saved as PNG."""
    plt = _pyplot()
    rows = [attention_grid(f, m) for f, m in zip(faces, maps)]
    fig, axes = plt.subplots(len(rows), 1, figsize=(rows[0].shape[1] / 100 + 0.4, 1.25 * len(rows) * rows[0].shape[0] / 100 + 0.3),
                             squeeze=False)
    for ax, row, caption in zip(axes[:, 0], rows, captions):
        ax.imshow(row)
        ax.set_title(caption, fontsize=8, loc="left")
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path)


def roc_plot(path, curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], title: str) -> None:
    """ROC curves {name: (fpr, tpr, auc)} in one figure."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.4f})" if np.isfinite(auc) else name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (reals called fake)")
    ax.set_ylabel("true positive rate (fakes caught)")
    ax.set_title(title)
    if curves:
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "one class only: no ROC curve", ha="center", va="center")
    _save(fig, path)


def robustness_plot(path, curves: Mapping[str, Sequence[tuple[int, float]]], clean: float, title: str) -> None:
    """AUC against perturbation level, one line per type {type: [(level, auc), ...]}; clean AUC dashed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, points in sorted(curves.items()):
        points = sorted(points)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    if np.isfinite(clean):
        ax.axhline(clean, color="black", linestyle="--", linewidth=1, label=f"clean ({clean:.4f})")
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    levels = sorted({p[0] for points in curves.values() for p in points})
    ax.set_xticks(levels)
    ax.set_xlabel("perturbation level (DeeperForensics-1.0)")
    ax.set_ylabel("AUC")
    ax.set_ylim(0, 1.01)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower left", fontsize=8, ncol=2)
    _save(fig, path)


def roc_curves(scores: np.ndarray, labels: np.ndarray, methods: np.ndarray | None = None) -> dict:
    """{"all": ..., method: ...} ROC curves; each method against all reals (the FF++ protocol)."""
    curves = {}

    def add(name, s, y):
        if len(np.unique(y)) == 2:
            fpr, tpr, _ = metrics_lib.roc_curve(s, y)
            curves[name] = (fpr, tpr, metrics_lib.roc_auc(s, y))

    add("all", scores, labels)
    if methods is not None:
        real = labels == 0
        for method in sorted(set(methods[labels == 1].tolist())):
            sel = real | (methods == method)
            add(str(method), scores[sel], labels[sel])
    return curves


def score_histogram(path, scores: np.ndarray, labels: np.ndarray, title: str, threshold: float = 0.5) -> None:
    """Overlapping histograms of P(fake) for reals and fakes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 41)
    for label, name, colour in ((0, "real", "tab:blue"), (1, "fake", "tab:red")):
        sel = scores[labels == label]
        if sel.size:
            ax.hist(sel, bins=bins, alpha=0.6, color=colour, label=f"{name} ({sel.size})")
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("P(fake)")
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend()
    _save(fig, path)


def reliability_plot(path, bins_data: Mapping[str, np.ndarray], title: str) -> None:
    """A reliability diagram from `calibration.reliability_bins`: per-bin accuracy against confidence.

    Bars of each bin's accuracy over its span, the diagonal of perfect calibration, each
    bin's mean confidence as a dot, and below them the number of samples per bin.
    """
    plt = _pyplot()
    edges = np.asarray(bins_data["edges"], np.float64)
    count = np.asarray(bins_data["count"])
    acc = np.asarray(bins_data["accuracy"], np.float64)
    conf = np.asarray(bins_data["confidence"], np.float64)
    filled = count > 0
    p_fake = bins_data.get("convention") == "p_fake"
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(edges[:-1][filled], acc[filled], width=np.diff(edges)[filled], align="edge",
           color="tab:blue", edgecolor="black", linewidth=0.5,
           label="fraction of fakes" if p_fake else "accuracy")
    ax.plot(conf[filled], acc[filled], "o", color="tab:red", markersize=3,
            label="(mean confidence, accuracy) of a bin")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_ylabel("fraction of fakes" if p_fake else "accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    axc.bar(edges[:-1], count, width=np.diff(edges), align="edge", color="grey", edgecolor="black",
            linewidth=0.5)
    axc.set_xlabel("P(fake)" if p_fake else "confidence, P(predicted class)")
    axc.set_ylabel("count")
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path) -> None:
    # Through epath, so that a gs:// workdir gets its plots too.
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _pyplot().close(fig)
    out = epath.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buf.getvalue())
