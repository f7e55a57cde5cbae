"""Pictures of schedules and results (matplotlib, PNG, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from .files import save_figure
from .schedule import CacheSchedule


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


__all__ = ["mask_heatmap"]
