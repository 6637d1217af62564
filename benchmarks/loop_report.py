"""The learning-loop simulation's plots and report.md (benchmarks.loop writes the data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgerec.cli.pipeline_rules import CANDIDATE, CONTROL

MARKS = {"win": "promote", "loss": "stop (loss)", "guardrail": "stop (guardrail)", "inconclusive": "next stage"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metric(report: dict[str, Any], path: Path) -> Path:
    """Per round, each variant's conversion in the running stage at every look, and the pipeline's decision points."""
    plt = _pyplot()
    rounds = report["rounds"]
    figure, axes = plt.subplots(1, len(rounds), figsize=(5 * len(rounds), 4), sharey=True, squeeze=False)
    for ax, r in zip(axes[0], rounds):
        points = [p for p in report["timeline"] if p["round"] == r["round"]]
        for variant, colour in ((CONTROL, "#888888"), (CANDIDATE, "#e07b39")):
            xs = [p["shoppers"] for p in points if p["conversion"][variant] is not None]
            ys = [p["conversion"][variant] for p in points if p["conversion"][variant] is not None]
            ax.plot(xs, ys, marker="o", markersize=3, color=colour, label=variant)
        for p in points:
            if p["decision"] != "wait":
                ax.axvline(p["shoppers"], color="#3b7dd8", linestyle="--", linewidth=1)
                ax.annotate(
                    MARKS.get(p["decision"], p["decision"]),
                    (p["shoppers"], 0.02),
                    xycoords=("data", "axes fraction"),
                    rotation=90,
                    fontsize=8,
                    color="#3b7dd8",
                )
        title = f"round {r['round']} ({r['month']}){' bad candidate' if r['bad_candidate'] else ''}: {r['decision']}"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("shoppers of the month so far")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("conversion in the running stage")
    axes[0][0].legend(loc="center left")
    figure.suptitle("learning loop: each variant's conversion at every look (dashed: a decision)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_aa(aa: dict[str, Any], path: Path) -> Path:
    """A/A runs: the share of runs with a false winner by the number of looks, for both tests, against alpha."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(6, 4))
    looks = range(1, aa["looks"] + 1)
    ax.plot(looks, aa["false_winner_rate_by_look"]["fixed_peeking"], color="#c0392b", label="fixed-horizon, peeked")
    ax.plot(looks, aa["false_winner_rate_by_look"]["sequential"], color="#27ae60", label="sequential (mSPRT)")
    ax.axhline(aa["alpha"], color="#555555", linestyle=":", label=f"alpha {aa['alpha']}")
    ax.set_xlabel("looks (one per batch of traffic)")
    ax.set_ylabel("runs with a false winner so far")
    ax.set_title(f"A/A, {aa['runs']} runs in process, {aa['impressions_per_look']} impressions a look", fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value * 100:+.1f}%"


def _srm(checks: dict[str, Any]) -> str:
    return "; ".join(
        f"p = {_f(c.get('p_value'))}, {'MISMATCH' if c.get('mismatch') else 'no mismatch'}" for c in checks.values()
    )


def _interval(aa: dict[str, Any], test: str) -> str:
    low, high = aa[f"false_winner_rate_{test}_ci95"]
    return f"{low:.4f}, {high:.4f}"


def render_markdown(report: dict[str, Any]) -> str:
    s, aa, bad = report["settings"], report["aa"], report["bad_candidate"]
    lines = [
        "# Learning loop simulation",
        "",
        f"`{report['command']}` on {report['machine']['logical_cpus']} CPUs, {report['machine']['started_at']}, "
        f"{report['wall_seconds']} s.",
        "",
        f"Data: {s['data']}. Regions {' and '.join(s['regions'])}, one edge process each, a real origin. Before round "
        f"1 the active model is stale: the shop's launch ranker, {report['stale_model']['kind']}, of the history "
        f"before {report['stale_model']['history_before']}. "
        f"Round r's candidate is trained by the pipeline on the orders before month r; the month's customers with "
        f"history shop through the edges, {s['batch']} at a time, and the pipeline looks at the origin's report "
        "after each batch. Conversion: an offered item the shopper really bought that month.",
        "",
    ]
    if s.get("note"):
        lines += [f"> **Note:** {s['note']}", ""]
    lines += [
        "| round | month | candidate | served | decision (outcome) | stages | impressions served / candidate | "
        "conversion served / candidate | uplift |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in report["rounds"]:
        lines.append(
            f"| {r['round']}{' (bad)' if r['bad_candidate'] else ''} | {r['month']} | {r['candidate']} | "
            f"{r['served']} | **{r['decision']}** ({r['outcome']}) | {r['stages_reached']} | "
            f"{r['impressions'][CONTROL]} / {r['impressions'][CANDIDATE]} | {_f(r['conversion'][CONTROL])} / "
            f"{_f(r['conversion'][CANDIDATE])} | {_pct(r['uplift'])} |"
        )
    lines += ["", "Why each round ended: " + "; ".join(f"round {r['round']}: {r['reason']}" for r in report["rounds"])]
    gate = bad["offline_gate"]["held_out_week_ndcg@10"]
    lines += [
        "",
        f"**Bad candidate** (round {bad['round']}: the retrained ranker with its feature weights negated, the offline "
        f"gate's margin opened to {bad['offline_gate']['margin_opened_to']} so that it reaches the edges): "
        f"**{bad['decision']}** "
        f"({bad['outcome']}: {bad['reason']}). Its traffic share never went above {_f(bad['max_traffic_share'], 2)} "
        f"(its first stage: {_f(bad['stage_share'], 2)}); it answered {bad['impressions'][CANDIDATE]} of the round's "
        f"{bad['impressions'][CANDIDATE] + bad['impressions'][CONTROL]} impressions ({_f(bad['served_share'], 3)}: "
        "buckets are hashes of the shopper ids, so a stage's realized share varies around its weight; the origin's "
        f"sample-ratio check {_srm(bad['sample_ratio'])}). On the held-out week its NDCG@10 was "
        f"{_f(gate.get('candidate'))} against the served "
        f"model's {_f(gate.get('served'))}: at the default margin ({bad['offline_gate']['default_margin']}) the "
        "offline gate alone would have rejected it.",
        "",
        f"The mSPRT of the origin's reports is tuned for {s['sequential_tuning_n']} impressions a variant "
        "(`EDGEREC_SEQUENTIAL_TUNING_N`, about a stage's traffic here; the default 5000 suits a larger shop). The "
        f"edges' model budget is {s['edge_model_budget_ms']} ms (`EDGEREC_MODEL_BUDGET_MS`): this shared machine "
        "overruns the default 25 ms under the simulation's load, and the breaker's fallbacks are not what is measured.",
        "",
        f"Errors seen by shoppers: **{report['errors']}**. Events: {report['events']['sent']:,} sent, "
        f"{report['events']['at_origin']:,} at the origin.",
        "",
        f"**A/A** ({aa['method']}): {aa['runs']} runs of {aa['looks']} looks of {aa['impressions_per_look']} "
        f"impressions, the candidate's share {aa['candidate_share']}, conversion {_f(aa['conversion_rate'])} in both "
        f"arms, mSPRT tuned for {aa['sequential_tuning_n']} impressions a variant. False-winner rate of the "
        f"sequential test: **{_f(aa['false_winner_rate_sequential'], 4)}** [95% CI {_interval(aa, 'sequential')}] "
        f"against alpha {aa['alpha']}; of the fixed-horizon test peeked at every look: "
        f"**{_f(aa['false_winner_rate_fixed_peeking'], 4)}** [{_interval(aa, 'fixed_peeking')}].",
        "",
        "![conversion per variant at every look](loop_metric.png)",
        "",
        "![A/A false winners by look](loop_aa.png)",
        "",
    ]
    return "\n".join(lines)
