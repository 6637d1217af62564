"""The profile mode's report: report.json, report.md and profiles.png (the latency distributions of the two request
paths, the propagation CDF), with the issue's goals checked against the figures."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

GOAL_RATIO = 0.9  # the hit path within 10% of the recent_items path (throughput and p99)
GOAL_RSS_BYTES = 300 * 10**6
GOAL_PROPAGATION_MS = 250.0
PATHS = {"hit": "shopper id only (profile hit)", "request": "recent_items in the request"}


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 4) if present else None


def _cpu_ms_per_request(run: dict[str, Any]) -> float | None:
    if not run.get("rps") or run.get("cpu_percent") is None:
        return None
    return round(run["cpu_percent"] / 100.0 / run["rps"] * 1000.0, 4)


def _share(run: dict[str, Any], key: str) -> float | None:
    return round(run[key] / run["requests"], 4) if run.get(key) is not None and run.get("requests") else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def throughput(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    per_round = []
    for r in rounds:
        hit, req, hit70, req70 = r["hit"], r["request"], r["hit_at_70"], r["request_at_70"]
        per_round.append(
            {
                "order": r["order"],
                "hit_rps": hit["rps"],
                "request_rps": req["rps"],
                "rps_ratio": _ratio(hit["rps"], req["rps"]),
                "hit_p99_ms": hit["p99_ms"],
                "request_p99_ms": req["p99_ms"],
                "offered_rps_at_70": hit70["offered_rps"],
                "hit_p99_at_70_ms": hit70["p99_ms"],
                "request_p99_at_70_ms": req70["p99_ms"],
                "p99_at_70_ratio": _ratio(hit70["p99_ms"], req70["p99_ms"]),
                "hit_cpu_ms_per_request": _cpu_ms_per_request(hit),
                "request_cpu_ms_per_request": _cpu_ms_per_request(req),
                "errors": sum(x["errors"] for x in (hit, req, hit70, req70)),
                "late_sends_at_70": hit70["late_sends"] + req70["late_sends"],
                # Answers from the fallback (the model's breaker open after a slow run): they skip the model.
                "hit_fallback_share": _share(hit, "fallback_answers"),
                "request_fallback_share": _share(req, "fallback_answers"),
            }
        )

    def med(key: str) -> float | None:
        return _median([r[key] for r in per_round])

    hit_cpu, req_cpu = med("hit_cpu_ms_per_request"), med("request_cpu_ms_per_request")
    return {
        "rounds": per_round,
        "hit_rps": med("hit_rps"),
        "request_rps": med("request_rps"),
        # The median of the ratios within rounds: a pair run back to back shares the machine's mood.
        "rps_ratio": med("rps_ratio"),
        "hit_p99_ms": med("hit_p99_ms"),
        "request_p99_ms": med("request_p99_ms"),
        "p99_at_peak_ratio": _median([_ratio(r["hit_p99_ms"], r["request_p99_ms"]) for r in per_round]),
        "hit_p99_at_70_ms": med("hit_p99_at_70_ms"),
        "request_p99_at_70_ms": med("request_p99_at_70_ms"),
        "p99_at_70_ratio": med("p99_at_70_ratio"),
        "hit_cpu_ms_per_request": hit_cpu,
        "request_cpu_ms_per_request": req_cpu,
        "hit_extra_cpu_us_per_request": round((hit_cpu - req_cpu) * 1000.0, 1) if hit_cpu and req_cpu else None,
        "errors": sum(r["errors"] for r in per_round),
    }


def build(
    machine: dict[str, Any],
    settings: dict[str, Any],
    loaded: dict[str, Any],
    rounds: list[dict[str, Any]],
    memory: dict[str, Any],
    propagation: dict[str, dict[str, Any]],
    breakdown: dict[str, Any],
    command: str,
    wall_s: float,
) -> dict[str, Any]:
    tp = throughput(rounds)
    n = settings["profiles"]
    rss = memory["rss_after_load_test_bytes"]
    memory = {
        **memory,
        "rss_mib": round(rss / 2**20, 1),
        "rss_without_profiles_mib": round(memory["rss_without_profiles_bytes"] / 2**20, 1),
        "rss_per_profile_bytes": round((rss - memory["rss_without_profiles_bytes"]) / n, 1) if n else None,
        "accounted_per_profile_bytes": round(memory["profiles_accounted_bytes"] / memory["profiles_held"], 1)
        if memory.get("profiles_held")
        else None,
    }
    goals = {
        "throughput_hit_vs_request_at_least_0.9": _meets(tp["rps_ratio"], lambda v: v >= GOAL_RATIO),
        "p99_at_70pct_hit_vs_request_at_most_1.1": _meets(tp["p99_at_70_ratio"], lambda v: v <= 2 - GOAL_RATIO),
        "rss_at_most_300_mb": rss <= GOAL_RSS_BYTES,
        **{
            f"propagation_{path}_p99_at_most_250_ms": _meets(p["p99_ms"], lambda v: v <= GOAL_PROPAGATION_MS)
            and not p["unseen"]
            for path, p in propagation.items()
        },
    }
    summary = [
        f"hit / recent_items throughput {tp['rps_ratio']} ({tp['hit_rps']} / {tp['request_rps']} req/s, medians of "
        f"{len(rounds)} alternated rounds; goal >= {GOAL_RATIO})",
        f"p99 at peak {tp['hit_p99_ms']} / {tp['request_p99_ms']} ms; at 70% of the slower peak "
        f"{tp['hit_p99_at_70_ms']} / {tp['request_p99_at_70_ms']} ms (ratio {tp['p99_at_70_ratio']})",
        f"server CPU {tp['hit_cpu_ms_per_request']} / {tp['request_cpu_ms_per_request']} ms a request "
        f"({tp['hit_extra_cpu_us_per_request']} us more for a hit)",
        f"RSS {memory['rss_mib']} MiB with {n:,} profiles and {settings['catalog_offers']:,} offers "
        f"({memory['rss_without_profiles_mib']} MiB without profiles: {memory['rss_per_profile_bytes']} B a profile; "
        f"goal <= 300 MB)",
        *[
            f"propagation over {path}: every replica sees an event in p50 {p['p50_ms']} / p99 {p['p99_ms']} / max "
            f"{p['max_ms']} ms over {p['events']} events ({p['unseen']} unseen; goal p99 <= 250 ms)"
            for path, p in propagation.items()
        ],
        f"in-process steps: a hit {breakdown['hit_total_us']} us, recent_items {breakdown['request_total_us']} us "
        f"({breakdown['hit_extra_us']} us more for a hit)",
        f"goals: {', '.join(f'{k} {v}' for k, v in goals.items())}",
    ]
    return {
        "mode": "profiles",
        "machine": machine,
        "settings": settings,
        "command": command,
        "load": loaded,
        "throughput": tp,
        "memory": memory,
        "propagation": propagation,
        "breakdown": breakdown,
        "goals": goals,
        "summary": summary,
        "wall_seconds": round(wall_s, 1),
    }


def _meets(value: float | None, test: Any) -> bool:
    return value is not None and bool(test(value))


def markdown(report: dict[str, Any]) -> str:
    s, tp, m = report["settings"], report["throughput"], report["memory"]
    lines = [
        "# Latency benchmark, profile mode",
        "",
        f"`{report['command']}`",
        "",
        f"{s['profiles']:,} shoppers' profiles ({s['events_per_shopper_mean']} purchase events each on average, "
        f"windows of real {s['region']} customers' histories from {s['data']}), loaded by {s['load_path']}: "
        f"{report['load']['events']:,} events imported in {report['load']['seconds']} s, edges ready "
        f"{report['load']['edges_ready_s']} s later. {s['catalog_offers']:,} offers at the edge, "
        f"{s['candidates_per_request']} of them in {s['region']} (the candidates each request ranks); k = {s['k']}; "
        f"wrk, {s['connections']} connections, {s['duration_s']} s a run; model reads profiles: "
        f"{s['model_reads_profiles']}. Load average {report['machine']['load_average_at_start']} at start, "
        f"{report['machine'].get('load_average_at_end')} at the end.",
        "",
        "| round | order | hit req/s | recent_items req/s | ratio | p99 at peak ms (hit / ri) | p99 at 70% ms "
        "(hit / ri) | CPU ms/req (hit / ri) | fallback share at peak (hit / ri) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(tp["rounds"], 1):
        lines.append(
            f"| {i} | {' then '.join(r['order'])} | {r['hit_rps']} | {r['request_rps']} | {r['rps_ratio']} | "
            f"{r['hit_p99_ms']} / {r['request_p99_ms']} | {r['hit_p99_at_70_ms']} / {r['request_p99_at_70_ms']} | "
            f"{r['hit_cpu_ms_per_request']} / {r['request_cpu_ms_per_request']} | "
            f"{r['hit_fallback_share']} / {r['request_fallback_share']} |"
        )
    lines += [
        f"| median | | {tp['hit_rps']} | {tp['request_rps']} | **{tp['rps_ratio']}** | {tp['hit_p99_ms']} / "
        f"{tp['request_p99_ms']} | {tp['hit_p99_at_70_ms']} / {tp['request_p99_at_70_ms']} | "
        f"{tp['hit_cpu_ms_per_request']} / {tp['request_cpu_ms_per_request']} | |",
        "",
        f"Memory: RSS **{m['rss_mib']} MiB** with the profiles ({m['rss_loaded_bytes'] / 2**20:.1f} MiB right after "
        f"loading), {m['rss_without_profiles_mib']} MiB for the same edge and offers without a profile store: "
        f"{m['rss_per_profile_bytes']} bytes of RSS a profile; {m['profiles_held']} profiles held in memory, "
        f"{m['accounted_per_profile_bytes']} accounted bytes each (budget {m['profiles_budget_bytes']}).",
        "",
        "| replica path | events | p50 ms | p90 ms | p99 ms | max ms | unseen | other replica p99 | event ack p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for path, p in report["propagation"].items():
        lines.append(
            f"| {path} | {p['events']} | {p['p50_ms']} | {p['p90_ms']} | {p['p99_ms']} | {p['max_ms']} | "
            f"{p['unseen']} | {p['other_replica_p99_ms']} | {p['event_ack_p99_ms']} |"
        )
    b = report["breakdown"]
    lines += [
        "",
        f"Where a hit's cost goes (in the harness process, warm, {b['sample']} of the shoppers; µs a request; "
        f"profiles of {b['profile_sizes']['recent_mean']} recent events and {b['profile_sizes']['items_mean']} items, "
        f"{b['profile_sizes']['encoded_bytes_mean']} bytes encoded):",
        "",
        "| step | hit | recent_items |",
        "|---|---:|---:|",
    ]
    for step in dict.fromkeys([*b["hit_us"], *b["request_us"]]):
        lines.append(f"| {step} | {b['hit_us'].get(step, '')} | {b['request_us'].get(step, '')} |")
    lines.append(f"| total | {b['hit_total_us']} | {b['request_total_us']} |")
    lines += ["", "Goals: " + ", ".join(f"{k}: {'met' if v else 'missed'}" for k, v in report["goals"].items()), ""]
    lines += ["## Summary", "", *[f"- {line}" for line in report["summary"]], ""]
    return "\n".join(lines)


def plot(path: Path, report: dict[str, Any], rounds: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    last = rounds[-1]
    for kind, label in PATHS.items():
        for key, style in ((kind, "-"), (f"{kind}_at_70", "--")):
            cdf = last[key].get("cdf_ms")
            if cdf:
                where = "peak" if key == kind else f"{last[key]['offered_rps']} req/s"
                left.plot(
                    [ms for _, ms in cdf], [q / 100 for q, _ in cdf], style, marker=".", label=f"{label}, {where}"
                )
    left.set_xscale("log")
    left.set_xlabel("latency (ms, log)")
    left.set_ylabel("fraction of requests")
    left.set_title(f"request latency, last round ({report['settings']['profiles']:,} profiles)")
    left.legend(fontsize=7)
    left.grid(True, alpha=0.3)
    for name, p in report["propagation"].items():
        values = p["every_replica_ms"]
        if values:
            right.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=f"{name} (p99 {p['p99_ms']})")
    right.axvline(GOAL_PROPAGATION_MS, color="grey", linestyle=":", label="goal 250 ms")
    right.set_xscale("log")
    right.set_xlabel("event posted -> every replica shows it (ms, log)")
    right.set_ylabel("fraction of events")
    right.set_title("propagation to every replica of the region")
    right.legend(fontsize=7)
    right.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_profile_report(out: Path, report: dict[str, Any], rounds: list[dict[str, Any]]) -> list[Path]:
    """The report (build's) as report.json and report.md, and the rounds' plot as profiles.png, in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json", out / "report.md", out / "profiles.png"]
    written[0].write_text(json.dumps(report, indent=2) + "\n")
    written[1].write_text(markdown(report))
    plot(written[2], report, rounds)
    return written
