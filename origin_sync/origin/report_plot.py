"""The experiment report as a figure (matplotlib, imported only when a plot is asked for): CTR, conversion and
revenue per impression per currency, per variant with their 95% intervals."""

from __future__ import annotations

from typing import Any, Callable


def _p(value: float | None) -> str:
    if value is None:
        return "p=-"
    return f"p={value:.4f}" if value >= 1e-4 else f"p={value:.1e}"


def plot_title(report: dict[str, Any]) -> str:
    """The figure's title: the winner on conversion, or that there is none (and why, when the split is broken)."""
    head = f"experiment {report['experiment']}: "
    if report["winner"] is not None:
        return head + f"winner {report['winner']} on conversion ({_p(report['p_value'])})"
    if report["sample_ratio"]["mismatch"]:
        return head + "no significant winner: sample ratio mismatch, the split is broken"
    return head + f"no significant winner on conversion (leader {report['leader']}, {_p(report['p_value'])})"


VARIANT_COLOURS = (
    "#888888",
    "#3b7dd8",
    "#e07b39",
    "#3aa655",
    "#c9463d",
    "#8a5cc2",
    "#b8912f",
    "#2fa7b8",
    "#d45fa0",
    "#5f6f7f",
)


def report_figure(report: dict[str, Any]) -> Any:
    """The report as a matplotlib figure: CTR, conversion, and revenue per impression in each currency (one panel
    per currency), per variant with their 95% intervals; the variants' legend below the panels, off the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    names = list(report["variants"])
    colours = [VARIANT_COLOURS[i % len(VARIANT_COLOURS)] for i in range(len(names))]
    panels: list[tuple[str, Callable[[str], dict[str, Any]], str]] = [
        ("CTR (95% CI)", lambda n: report["variants"][n]["ctr"], "rate"),
        ("conversion (95% CI)", lambda n: report["variants"][n]["conversion"], "rate"),
    ]
    for cur in report.get("currencies", ()):
        panels.append(
            (
                f"revenue / impression, {cur} (95% CI)",
                lambda n, cur=cur: report["variants"][n]["revenue_per_impression"][cur],
                "mean",
            )
        )
    currencies = list(report.get("currencies", ()))
    fig, axes = plt.subplots(
        1, len(panels) + (0 if currencies else 1), figsize=(4 * max(3, len(panels)), 4.2), squeeze=False
    )
    if not currencies:
        empty = axes[0][-1]
        empty.set_title("revenue / impression", fontsize=10)
        empty.text(0.5, 0.5, "no purchases yet", transform=empty.transAxes, ha="center", va="center", color="#555555")
        empty.set_xticks([])
        empty.set_yticks([])
    for ax, (title, stat, field) in zip(axes[0], panels):
        values = [stat(n)[field] or 0.0 for n in names]
        # No interval (too few impressions): no error bar, rather than a misleading one.
        lows = [v - stat(n)["ci_low"] if stat(n)["ci_low"] is not None else 0.0 for v, n in zip(values, names)]
        highs = [stat(n)["ci_high"] - v if stat(n)["ci_high"] is not None else 0.0 for v, n in zip(values, names)]
        ax.bar(range(len(names)), values, yerr=[lows, highs], capsize=6, color=colours)
        ax.set_xticks(range(len(names)), names)
        ax.set_title(title, fontsize=10)
    fig.suptitle(plot_title(report))
    fig.legend(
        handles=[
            Patch(color=c, label=f"{n} (control)" if n == report["control"] and "control" not in n else n)
            for n, c in zip(names, colours)
        ],
        loc="lower center",
        ncol=min(len(names), 5),
        frameon=False,
        bbox_to_anchor=(0.5, 0.0),
    )
    rows = (len(names) + 4) // 5
    fig.tight_layout(rect=(0, 0.06 * rows + 0.02, 1, 0.95))
    return fig


def plot_report(report: dict[str, Any], path: str) -> str:
    """A PNG of report_figure."""
    import matplotlib.pyplot as plt

    fig = report_figure(report)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
