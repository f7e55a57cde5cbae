"""Pictures of schedules and results (matplotlib, PNG, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.ticker import MaxNLocator

from .files import save_figure
from .schedule import CacheSchedule

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .runtime.profile import ChangeProfile


COST_AXIS = "MACs (fraction of the uncached run)"


def cost_loss_figure(
    title: str, loss_axis: str, cost_axis: str = COST_AXIS, size: tuple[float, float] = (6.4, 4.6)
) -> tuple[Figure, Axes]:
    """The frame of every Pareto plot: loss up against MACs across, as a fraction of the uncached run."""
    fig, ax = plt.subplots(figsize=size)
    ax.set_xlabel(cost_axis)
    ax.set_ylabel(loss_axis)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return fig, ax


def save_plot(fig: Figure, ax: Axes, path: str | Path, legend_columns: int = 1) -> Path:
    """Legend, layout, and a PNG written whole (a temporary name, then renamed)."""
    ax.legend(fontsize=7, ncol=legend_columns)
    fig.tight_layout()
    saved = save_figure(fig, path, dpi=120)
    plt.close(fig)
    return saved


def mask_heatmap(schedule: CacheSchedule, path: str | Path) -> Path:
    """One panel per component: steps down, blocks across; dark = compute, light = reuse."""
    panels = [(g.name, c, schedule.mask(g.name)[:, :, i]) for g in schedule.groups for i, c in enumerate(g.components)]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels) + 1, 4), squeeze=False, sharey=True)
    for ax, (group, component, mask) in zip(axes[0], panels, strict=True):
        ax.imshow(mask.astype(float), cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_title(f"{component}\n{group} ({mask.mean():.0%})", fontsize=8)
        ax.set_xlabel("block")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_ylabel("step")
    fig.suptitle(f"{schedule.name or 'schedule'}: compute {schedule.compute_fraction:.1%} (dark = compute)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return Path(path)


def change_heatmap(profile: ChangeProfile, path: str | Path, title: str) -> Path:
    """One panel per component: steps down, blocks across; colour = relative change from the previous step
    (log scale, one scale for all panels, so components and blocks compare at a glance)."""
    panels = [
        (group.name, component, profile.changes[group.name][:, :, i])
        for group in profile.groups
        for i, component in enumerate(group.components)
    ]
    values = np.concatenate([p.ravel() for _, _, p in panels])
    positive = values[values > 0]
    low, high = (positive.min(), positive.max()) if positive.size else (1e-6, 1.0)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(2.2 * len(panels) + 1.4, 4), squeeze=False, sharey=True, layout="constrained"
    )
    image = None
    for ax, (group, component, change) in zip(axes[0], panels, strict=True):
        image = ax.imshow(
            np.clip(change, low, high),
            cmap="viridis",
            norm=LogNorm(vmin=low, vmax=high),
            aspect="auto",
            interpolation="nearest",
            extent=(-0.5, change.shape[1] - 0.5, change.shape[0] + 0.5, 0.5),
        )
        ax.set_title(f"{component}\n{group}", fontsize=8)
        ax.set_xlabel("block")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_ylabel("step (change from the step before)")
    fig.colorbar(image, ax=axes[0].tolist(), label="relative L1 change of the output", shrink=0.9)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return Path(path)


__all__ = ["change_heatmap", "mask_heatmap"]
