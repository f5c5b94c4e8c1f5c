"""Curves a user looks at, as a picture (.png, .svg, .pdf; matplotlib) or as CSV (.csv).

write_curve("lr.png", "step", steps, {"lr": lrs}, title="cosine, 1,200 steps")
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from .errors import ConfigError

PICTURES = (".png", ".svg", ".pdf")


def check_curve_path(path: Path) -> None:
    """Refuse, before any work, a suffix we cannot write."""
    if path.suffix.lower() not in PICTURES + (".csv",):
        raise ConfigError(f"--output {path}: use a .csv file or a picture ({', '.join(PICTURES)})")


def write_curve(
    path: Path,
    x_name: str,
    xs: Sequence[float],
    series: dict[str, Sequence[float]],
    *,
    title: str = "",
    log_x: bool = False,
    log_y: bool = False,
    marker: tuple[float, str] | None = None,
) -> None:
    """CSV columns x_name + series, or a line plot of every series against x on one set of axes
    (`marker`: a labelled vertical line at that x)."""
    check_curve_path(path)
    if path.suffix.lower() == ".csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow([x_name, *series])
            writer.writerows(zip(xs, *series.values()))
        return
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    for name, ys in series.items():
        ax.plot(xs, ys, label=name)
    if marker is not None:
        ax.axvline(marker[0], color="tab:red", linestyle="--", label=marker[1])
    ax.set_xlabel(x_name)
    ax.set_xscale("log" if log_x else "linear")
    ax.set_yscale("log" if log_y else "linear")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
