"""The benchmark's outputs: report.json (medians over rounds, ratios within rounds), report.md and two plots."""

from __future__ import annotations

import functools
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .histogram import Histogram

P99_BUDGET_MS = 10.0
T_FIELDS = ("rps", "p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "errors", "cpu_percent")
LABELS = {
    "edgerec": "edgerec",
    "edgerec_no_events": "edgerec, events off (--events off)",
    "edgerec_traced": "edgerec, tracing a sample (EDGEREC_TRACE_SAMPLE)",
    "edgerec_access_log": "edgerec, access log on (--access-log on)",
    "edgerec_granian": "edgerec on granian (ASGI) instead of uvicorn",
    "ceiling": "ceiling (bare Starlette)",
    "ceiling_raw": "second reference: a raw ASGI callable on uvicorn, the edge's server",
    "peer_mlserver": "peer: MLServer",
    "peer_pytriton": "peer: PyTriton",
    "peer": "peer (the best of this run's peers)",
    "edgerec_cdn": "edgerec behind Varnish (anonymous)",
}
ORDER = (
    "edgerec",
    "edgerec_no_events",
    "edgerec_traced",
    "edgerec_access_log",
    "edgerec_granian",
    "ceiling",
    "ceiling_raw",
    "peer_mlserver",
    "peer_pytriton",
    "edgerec_cdn",
)
# The peer model servers, each measured as a target; the report's `peer` is the one with the higher req/s.
PEERS = ("peer_mlserver", "peer_pytriton")
EVENTS_BUDGET = 0.95  # with events on, throughput must stay within 5% of throughput with events off


def median(values: list[Any]) -> Any:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    m = statistics.median(vals)
    return round(m, 3) if isinstance(m, float) else m


def _median_of(results: list[dict[str, Any]], key: str) -> Any:
    if key == "errors":  # errors are never hidden by a median: they add up
        vals = [r.get(key) for r in results if r.get(key) is not None]
        return sum(vals) if vals else None
    return median([r.get(key) for r in results])


def knee(points: list[dict[str, Any]], peak: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The highest throughput among the steps whose p99 stayed under the budget (and had no error).

    When that is the closed-loop peak itself, the server was never pushed past the budget: the knee is
    at least there (a lower bound), not found."""
    good = [p for p in points if p.get("p99_ms") is not None and p["p99_ms"] < P99_BUDGET_MS and not p.get("errors")]
    if not good:
        return None
    best = max(good, key=lambda p: p["rps"])
    return {
        "rps": best["rps"],
        "p99_ms": best["p99_ms"],
        "offered_rps": best.get("offered_rps"),
        "lower_bound": best is peak,
    }


def summarize_target(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One target's T (medians over rounds of the peak figures) with the cross-check, knee and steps."""
    measured = [r for r in rounds if "peak" in r]
    if not measured:
        reasons = [r.get("skipped") or r.get("error") for r in rounds]
        out: dict[str, Any] = {f: None for f in T_FIELDS}
        out["skipped"] = next((x for x in reasons if x), "not measured")
        names = [r["name"] for r in rounds if r.get("name")]
        if names:
            out["name"] = names[0]
        return out
    peaks = [r["peak"] for r in measured]
    out = {f: _median_of(peaks, f) for f in T_FIELDS}
    out["loadgen_cpu_percent"] = median([p.get("loadgen_cpu_percent") for p in peaks])
    out["users"] = peaks[0].get("users")
    if out["rps"] and out["cpu_percent"] is not None:
        out["cpu_ms_per_request"] = round(out["cpu_percent"] * 10.0 / out["rps"], 4)
    # The generator, not the server, set the pace when it used its core(s) fully and the server did not.
    out["loadgen_bound"] = bool(
        out["loadgen_cpu_percent"] is not None
        and out["cpu_percent"] is not None
        and out["loadgen_cpu_percent"] >= 85.0 * max(1, peaks[0].get("load_cores", 1))
        and out["cpu_percent"] < 85.0 * max(1, peaks[0].get("server_cores", 1))
    )
    wrks = [r["wrk"] for r in measured if isinstance(r.get("wrk"), dict) and "rps" in r["wrk"]]
    if wrks:
        out["wrk"] = {k: _median_of(wrks, k) for k in (*T_FIELDS, "loadgen_cpu_percent")}
        out["wrk"]["connections"] = wrks[0].get("connections")
        out["wrk"]["loadgen_bound"] = bool(
            out["wrk"]["loadgen_cpu_percent"] is not None
            and out["wrk"]["cpu_percent"] is not None
            and out["wrk"]["loadgen_cpu_percent"] >= 85.0 * wrks[0].get("load_cores", 1)
            and out["wrk"]["cpu_percent"] < 85.0 * wrks[0].get("server_cores", 1)
        )
    else:
        skipped = next((r["wrk"].get("skipped") for r in measured if isinstance(r.get("wrk"), dict)), None)
        out["wrk"] = {"skipped": skipped or "not run"}
    # What the server would answer with its core(s) fully used, at the CPU cost per request measured under
    # the heaviest load: a figure no load generator's own limit can hide.
    basis = out["wrk"] if out["wrk"].get("rps") and out["wrk"].get("cpu_percent") else out
    if basis.get("rps") and basis.get("cpu_percent"):
        out["capacity_at_full_cpu_rps"] = round(
            basis["rps"] * 100.0 * peaks[0].get("server_cores", 1) / basis["cpu_percent"], 1
        )
    knees = [knee([*r.get("steps", []), r["peak"]], r["peak"]) for r in measured]
    out["knee"] = {
        "rps": median([k["rps"] for k in knees if k]),
        "p99_ms": median([k["p99_ms"] for k in knees if k]),
        "p99_budget_ms": P99_BUDGET_MS,
        "found_in_rounds": sum(1 for k in knees if k),
        # p99 stayed under budget even at the highest load reached: the real knee lies beyond.
        "lower_bound": all(k and k["lower_bound"] for k in knees),
    }
    out["steps"] = measured[-1].get("steps", [])
    for key in ("name", "version", "config", "cache", "parity", "note"):
        if key in measured[-1]:
            out[key] = measured[-1][key]
    return out


def capacity(t: dict[str, Any], source: str) -> float | None:
    if source == "wrk":
        return (t.get("wrk") or {}).get("rps")
    return t.get("rps")


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def round_ratios(round_results: dict[str, dict[str, Any]], source: str) -> dict[str, float | None]:
    """Ratios within one round: both sides measured minutes apart, under the same machine noise."""

    def rps(name: str) -> float | None:
        r = round_results.get(name) or {}
        if source == "wrk":
            return (r.get("wrk") or {}).get("rps")
        return (r.get("peak") or {}).get("rps")

    def full_cpu(name: str) -> float | None:
        r = round_results.get(name) or {}
        for run in (r.get("wrk") or {}, r.get("peak") or {}):
            if run.get("rps") and run.get("cpu_percent"):
                return run["rps"] * 100.0 / run["cpu_percent"]
        return None

    def p99(name: str) -> float | None:
        return ((round_results.get(name) or {}).get("peak") or {}).get("p99_ms")

    return {
        "edgerec_vs_ceiling_rps": ratio(rps("edgerec"), rps("ceiling")),
        "edgerec_vs_server_floor_rps": ratio(rps("edgerec"), rps("ceiling_raw")),
        "events_on_vs_off_rps": ratio(rps("edgerec"), rps("edgerec_no_events")),
        "events_on_vs_off_capacity_at_full_cpu": ratio(full_cpu("edgerec"), full_cpu("edgerec_no_events")),
        "traced_vs_untraced_rps": ratio(rps("edgerec_traced"), rps("edgerec")),
        "traced_vs_untraced_capacity_at_full_cpu": ratio(full_cpu("edgerec_traced"), full_cpu("edgerec")),
        "traced_vs_untraced_p99_at_peak": ratio(p99("edgerec_traced"), p99("edgerec")),
        "access_log_on_vs_off_rps": ratio(rps("edgerec_access_log"), rps("edgerec")),
        "access_log_on_vs_off_capacity_at_full_cpu": ratio(full_cpu("edgerec_access_log"), full_cpu("edgerec")),
        "granian_vs_uvicorn_rps": ratio(rps("edgerec_granian"), rps("edgerec")),
        "granian_vs_uvicorn_capacity_at_full_cpu": ratio(full_cpu("edgerec_granian"), full_cpu("edgerec")),
        "edgerec_vs_peer_rps": ratio(rps("edgerec"), rps("peer")),
        "edgerec_cdn_vs_edgerec_rps": ratio(rps("edgerec_cdn"), rps("edgerec")),
        "edgerec_vs_peer_p99_at_peak": ratio(p99("edgerec"), p99("peer")),
        "edgerec_vs_ceiling_capacity_at_full_cpu": ratio(full_cpu("edgerec"), full_cpu("ceiling")),
        "edgerec_vs_peer_capacity_at_full_cpu": ratio(full_cpu("edgerec"), full_cpu("peer")),
    }


def at_fraction(round_results: dict[str, Any], fraction: float) -> dict[str, Any] | None:
    steps = (round_results or {}).get("steps") or []
    match = [s for s in steps if abs((s.get("fraction") or 0) - fraction) < 1e-6]
    return match[0] if match else None


def best_peer(targets: dict[str, dict[str, Any]], source: str) -> str | None:
    """The measured peer with the higher req/s in this run (by `source`, else locust's); None when none was."""
    measured = [name for name in PEERS if not targets[name].get("skipped") and targets[name].get("rps")]
    if not measured:
        return None
    return max(measured, key=lambda name: capacity(targets[name], source) or targets[name]["rps"])


def peer_summary(targets: dict[str, dict[str, Any]], best: str | None) -> dict[str, Any]:
    """`targets.peer`: a copy of the best peer's summary with its target name, or why no peer was measured."""
    if best is not None:
        return {**targets[best], "target": best}
    out: dict[str, Any] = {f: None for f in T_FIELDS}
    out["skipped"] = "; ".join(f"{name}: {targets[name].get('skipped')}" for name in PEERS)
    out["name"] = " / ".join(str(targets[name].get("name") or name) for name in PEERS)
    return out


def peers_by_name(targets: dict[str, dict[str, Any]], best: str | None) -> dict[str, dict[str, Any]]:
    """Each peer by name (mlserver, pytriton): its req/s, p99, CPU per request and version, or why it was skipped."""
    peers = {}
    for name in PEERS:
        t = targets[name]
        entry: dict[str, Any] = {
            "target": name,
            "name": t.get("name"),
            "version": t.get("version"),
            "best": name == best,
        }
        if t.get("skipped"):
            entry["skipped"] = t["skipped"]
        else:
            entry.update(
                rps=t["rps"],
                wrk_rps=(t.get("wrk") or {}).get("rps"),
                p99_ms=t["p99_ms"],
                cpu_ms_per_request=t.get("cpu_ms_per_request"),
            )
        peers[name.removeprefix("peer_")] = entry
    return peers


def build_report(
    machine: dict[str, Any], settings: dict[str, Any], rounds: list[dict[str, dict[str, Any]]], command: str
) -> dict[str, Any]:
    targets = {name: summarize_target([r[name] for r in rounds if name in r]) for name in ORDER}
    source = "wrk" if all((targets[n].get("wrk") or {}).get("rps") for n in ("edgerec", "ceiling")) else "locust"
    best = best_peer(targets, source)
    targets["peer"] = peer_summary(targets, best)
    # Within each round the best peer stands as `peer`, so its ratios, 70% steps and wins read as before.
    rounds = [{**r, "peer": r.get(best, {})} if best else r for r in rounds]
    per_round = [round_ratios(r, source) for r in rounds]
    ratios: dict[str, Any] = {k: median([pr[k] for pr in per_round]) for k in per_round[0]} if per_round else {}
    ratios["source"] = f"{source} (median over rounds of the ratio within each round)"
    per_round_locust = [round_ratios(r, "locust") for r in rounds]
    ratios_locust = {k: median([pr[k] for pr in per_round_locust]) for k in per_round_locust[0]} if rounds else {}
    at70 = {}
    for name in (*ORDER, "peer"):
        picks = [at_fraction(r.get(name), 0.7) for r in rounds]
        picks = [p for p in picks if p]
        if picks:
            at70[name] = {
                "rps": median([p["rps"] for p in picks]),
                "p99_ms": median([p["p99_ms"] for p in picks]),
                "p50_ms": median([p["p50_ms"] for p in picks]),
                "offered_rps": median([p.get("offered_rps") for p in picks]),
                "errors": sum(p.get("errors") or 0 for p in picks),
            }
    # The same at a fixed arrival rate from wrk (70% of wrk's own closed-loop peak in that round).
    at70_wrk = {}
    for name in (*ORDER, "peer"):
        picks = [(r.get(name) or {}).get("wrk_at_70") for r in rounds]
        picks = [p for p in picks if p and p.get("rps")]
        if picks:
            at70_wrk[name] = {
                key: median([p[key] for p in picks])
                for key in ("rps", "offered_rps", "p50_ms", "p99_ms", "p999_ms", "cpu_percent")
            }
            at70_wrk[name]["late_sends"] = sum(p.get("late_sends") or 0 for p in picks)
            at70_wrk[name]["errors"] = sum(p.get("errors") or 0 for p in picks)
    report = {
        "schema": "edgerec-latency/1",
        "command": command,
        "machine": machine,
        "settings": settings,
        "targets": targets,
        "peers": peers_by_name(targets, best),
        "ratios": ratios,
        "ratios_locust": ratios_locust,
        "at_70pct_peak": at70,
        "at_70pct_peak_wrk": at70_wrk,
        "rounds": [_strip({k: v for k, v in r.items() if k != "peer"}) for r in rounds],
        # Peak req/s of the same edge with events on and off, round by round (both measured in the same round).
        "events_on_off_rounds": [
            {
                f"{side}_{src}": ((r.get(name) or {}).get("wrk" if src == "wrk" else "peak") or {}).get("rps")
                for side, name in (("on", "edgerec"), ("off", "edgerec_no_events"))
                for src in ("wrk", "locust")
            }
            for r in rounds
        ],
    }
    report["peer_wins"] = peer_wins(report)
    return report


def peer_wins(report: dict[str, Any]) -> list[str]:
    """Every measured figure where the peer does better than edgerec, said plainly."""
    e, p = report["targets"]["edgerec"], report["targets"]["peer"]
    if p.get("skipped") or e.get("skipped"):
        return []
    wins = []
    if p.get("rps") and e.get("rps") and p["rps"] > e["rps"]:
        wins.append(f"throughput at peak (locust): peer {p['rps']} req/s > edgerec {e['rps']} req/s")
    pw, ew = (p.get("wrk") or {}).get("rps"), (e.get("wrk") or {}).get("rps")
    if pw and ew and pw > ew:
        wins.append(f"throughput at peak (wrk): peer {pw} req/s > edgerec {ew} req/s")
    for key in ("p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms"):
        if p.get(key) is not None and e.get(key) is not None and p[key] < e[key]:
            wins.append(f"{key[:-3]} at peak: peer {p[key]} ms < edgerec {e[key]} ms")
    if (p.get("errors") or 0) < (e.get("errors") or 0):
        wins.append(f"errors at peak: peer {p['errors']} < edgerec {e['errors']}")
    pc, ec = p.get("cpu_ms_per_request"), e.get("cpu_ms_per_request")
    if pc is not None and ec is not None and pc < ec:
        wins.append(f"server CPU per request: peer {pc} ms < edgerec {ec} ms")
    a_e, a_p = report["at_70pct_peak"].get("edgerec"), report["at_70pct_peak"].get("peer")
    if (
        a_e
        and a_p
        and a_p.get("p99_ms") is not None
        and a_e.get("p99_ms") is not None
        and a_p["p99_ms"] < a_e["p99_ms"]
    ):
        wins.append(f"p99 at 70% of its own peak: peer {a_p['p99_ms']} ms < edgerec {a_e['p99_ms']} ms")
    w_e, w_p = report.get("at_70pct_peak_wrk", {}).get("edgerec"), report.get("at_70pct_peak_wrk", {}).get("peer")
    if w_e and w_p and w_p["p99_ms"] < w_e["p99_ms"]:
        wins.append(
            f"p99 at 70% of its own wrk peak (fixed rate): peer {w_p['p99_ms']} ms < edgerec {w_e['p99_ms']} ms"
        )
    return wins


def _strip(value: Any) -> Any:
    """Drop in-memory histograms before JSON."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def target_label(name: str, t: dict[str, Any]) -> str:
    label = LABELS[name]
    if name.startswith("peer") and t.get("name"):
        label = f"peer: {t['name']}"
    return label


def render_markdown(report: dict[str, Any], plots: list[str]) -> str:
    m, s, targets = report["machine"], report["settings"], report["targets"]
    lines = ["# edgerec latency benchmark", ""]
    if m.get("noisy"):
        lines += [f"> **Noisy machine:** {m['noisy']}. Compare ratios within this run, not absolute figures.", ""]
    lines += [
        f"Command: `{report['command']}`  ",
        f"Machine: {m.get('cpu_model')}, {m.get('logical_cpus')} logical CPUs, {m.get('memory_gib')} GiB, "
        f"{m.get('os')}, Python {m.get('python')}  ",
        f"Placement: {_placement(m)}  ",
        f"Traffic: {s['anonymous_share'] * 100:.0f}% anonymous / {(1 - s['anonymous_share']) * 100:.0f}% returning "
        f"shoppers ({s['data']}), regions {', '.join(s['regions'])}, k in {s['k_values']}, "
        f"{s['offers_per_region']} offers per region; {s['users']} locust users, {s['duration_s']} s per step "
        f"after {s['warmup_s']} s warm-up; {s['repeat']} round(s), medians shown.",
        "",
        "## At peak (closed loop: every user sends its next request when the answer arrives)",
        "",
        "| target | req/s (locust) | req/s (wrk) | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms | errors "
        "| server CPU % | CPU ms/req | req/s at full CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *_target_rows(targets, _peak_row, "|||||||||| "),
    ]
    lines += [
        "",
        "wrk latencies (p50/p99/max ms at its own peak, "
        f"{(targets['edgerec'].get('wrk') or {}).get('connections', '–')} connections): "
        + "; ".join(
            f"{name} {_fmt(t['wrk'].get('p50_ms'))}/{_fmt(t['wrk'].get('p99_ms'))}/{_fmt(t['wrk'].get('max_ms'))}"
            for name, t in targets.items()
            if (t.get("wrk") or {}).get("rps")
        ),
        "",
    ]
    lines += [
        "## The knee: the highest throughput with p99 under 10 ms (step load at fixed rates)",
        "",
        "| target | knee req/s | p99 there ms | at 70% of peak (locust): req/s | p99 ms "
        "| at 70% of wrk peak (wrk, fixed rate): req/s | p50 ms | p99 ms | server CPU % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *_target_rows(targets, functools.partial(_knee_row, report), None),
    ]

    if any((w or {}).get("late_sends") for w in report.get("at_70pct_peak_wrk", {}).values()):
        lines += [
            "",
            "Fixed-rate wrk runs with late sends (a request left over 1 ms after its slot because all "
            "connections were waiting, so the rate was not held): "
            + ", ".join(
                f"{n} {w['late_sends']}" for n, w in report["at_70pct_peak_wrk"].items() if w.get("late_sends")
            ),
        ]
    r = report["ratios"]
    lines += [
        "",
        "## Ratios (within each round, then the median)",
        "",
        f"The peer in these ratios is the best of this run's peers (the higher req/s): {best_peer_label(report)}.",
        "",
        f"- edgerec / ceiling throughput: **{_fmt(r.get('edgerec_vs_ceiling_rps'), 3)}**",
        f"- edgerec / peer throughput: **{_fmt(r.get('edgerec_vs_peer_rps'), 3)}**",
        f"- edgerec behind the CDN / edgerec direct: {_fmt(r.get('edgerec_cdn_vs_edgerec_rps'), 3)}",
        f"- edgerec p99 / peer p99 at peak: {_fmt(r.get('edgerec_vs_peer_p99_at_peak'), 3)}",
        f"- req/s at full server CPU, edgerec / ceiling: {_fmt(r.get('edgerec_vs_ceiling_capacity_at_full_cpu'), 3)}; "
        f"edgerec / peer: {_fmt(r.get('edgerec_vs_peer_capacity_at_full_cpu'), 3)} "
        "(throughput over server CPU share: holds even where a load generator, not the server, was the limit)",
        f"- events on / off (edgerec recording an impression per answer / the same edge with impressions "
        f"off): throughput **{_fmt(r.get('events_on_vs_off_rps'), 3)}**, req/s at full server CPU "
        f"{_fmt(r.get('events_on_vs_off_capacity_at_full_cpu'), 3)}; {events_verdict(r.get('events_on_vs_off_rps'))}"
        + (" (see events_on_off.png)" if "events_on_off.png" in plots else ""),
        f"- tracing a {s.get('trace_sample', 0.01):g} sample / tracing off (the same edge, OTLP to a local sink): "
        f"throughput **{_fmt(r.get('traced_vs_untraced_rps'), 3)}**, req/s at full server CPU "
        f"{_fmt(r.get('traced_vs_untraced_capacity_at_full_cpu'), 3)}, p99 at peak "
        f"{_fmt(r.get('traced_vs_untraced_p99_at_peak'), 3)}",
        f"- measured with: {r.get('source')}",
        "",
    ]
    wins = report["peer_wins"]
    if targets["peer"].get("skipped"):
        lines += [f"**Peer:** not measured ({targets['peer']['skipped']}).", ""]
    elif wins:
        lines += [f"**Where the best peer ({targets['peer'].get('name')}) wins:**", "", *[f"- {w}" for w in wins], ""]
    else:
        lines += [f"**The best peer ({targets['peer'].get('name')}) beats edgerec on no measured figure.**", ""]
    for name in PEERS:
        t = targets[name]
        if t.get("config"):
            lines += [f"Peer set-up: {t['name']}, {t['config']}.  "]
        if t.get("parity"):
            lines += [f"Peer parity check ({t['name']}): {t['parity']}.  "]
    lines += [""]
    cache = targets["edgerec_cdn"].get("cache")
    if cache:
        lines += [f"Varnish cache counters during the CDN runs: {cache}", ""]
    notes = [f"- {name}: {t['note']}" for name, t in targets.items() if t.get("note") and name != "peer"]
    if any(t.get("loadgen_bound") or (t.get("wrk") or {}).get("loadgen_bound") for t in targets.values()):
        notes.append(
            "- ⚠ marks a run whose load generator used its core(s) fully while the server did not: that "
            "figure is the generator's limit, not the server's; read 'req/s at full CPU' there."
        )
    if any((t.get("knee") or {}).get("lower_bound") for t in targets.values()):
        notes.append(
            "- ≥ marks a knee not reached: p99 stayed under 10 ms up to the highest load the generator "
            "could send (add --locust-processes on a bigger machine)."
        )
    if notes:
        lines += ["## Notes", "", *notes, ""]
    lines += ["## Plots", "", *[f"![{p}]({p})" for p in plots], ""]
    lines += ["## For README.md", "", *readme_section(report), ""]
    return "\n".join(lines)


def events_verdict(value: float | None) -> str:
    if value is None:
        return "not measured (both edgerec targets are needed in the same round)"
    if value >= EVENTS_BUDGET:
        return f"within the 5% budget (≥ {EVENTS_BUDGET})"
    return f"OUTSIDE the 5% budget (< {EVENTS_BUDGET})"


def plot_events_on_off(path: Path, report: dict[str, Any]) -> bool:
    """Bars of req/s with events on and off per round (wrk and locust peaks), the ratio in the title."""
    rounds = report.get("events_on_off_rounds") or []
    if not rounds:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    labels, on, off = [], [], []
    for i, r in enumerate(rounds):
        for source in ("wrk", "locust"):
            if r.get(f"on_{source}") and r.get(f"off_{source}"):
                labels.append(f"round {i + 1}\n{source}")
                on.append(r[f"on_{source}"])
                off.append(r[f"off_{source}"])
    if not labels:
        plt.close(fig)
        return False
    xs = list(range(len(labels)))
    ax.bar([x - 0.2 for x in xs], off, width=0.4, label="impressions off", color="#888888")
    ax.bar([x + 0.2 for x in xs], on, width=0.4, label="impressions on (as shipped)", color="#3b7dd8")
    for x, a, b in zip(xs, on, off):
        ax.text(x, max(a, b) * 1.01, f"{a / b:.3f}", ha="center", fontsize=8)
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("peak req/s")
    ratio_value = report["ratios"].get("events_on_vs_off_rps")
    ax.set_title(f"edgerec throughput, events on / off: {_fmt(ratio_value, 3)} (budget ≥ {EVENTS_BUDGET})", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def readme_section(report: dict[str, Any]) -> list[str]:
    """The short form of this run for README's Benchmarks section: figures, machine, the command."""
    m, t, r = report["machine"], report["targets"], report["ratios"]

    def row(name: str, x: dict[str, Any]) -> str:
        return (
            f"| {target_label(name, x)} | {_fmt((x.get('wrk') or {}).get('rps'), 0)} | {_fmt(x['rps'], 0)} "
            f"| {_fmt(x['p50_ms'])} | {_fmt(x['p99_ms'])} | {_fmt(x['p999_ms'])} | {_knee_rps(x.get('knee') or {})} |"
        )

    rows = [
        "| | req/s (wrk) | req/s (locust) | p50 ms | p99 ms | p99.9 ms | knee req/s (p99 < 10 ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *_target_rows(t, row, "||||||"),
    ]
    return [
        f"Measured {m.get('started_at')} on {m.get('cpu_model')} ({m.get('logical_cpus')} CPUs, {m.get('os')}), "
        f"{_placement(m)}; {report['settings']['repeat']} round(s), medians.",
        "",
        *rows,
        "",
        f"edgerec / ceiling: {_fmt(r.get('edgerec_vs_ceiling_rps'), 2)}; edgerec / best peer "
        f"({best_peer_label(report)}): "
        f"{_fmt(r.get('edgerec_vs_peer_rps'), 2)} (req/s, {r.get('source', '').split(' ')[0]}); events on / off: "
        f"{_fmt(r.get('events_on_vs_off_rps'), 3)} ({events_verdict(r.get('events_on_vs_off_rps'))}).",
        *([f"Where the peer wins: {'; '.join(report['peer_wins'])}."] if report["peer_wins"] else []),
        "",
        f"Reproduce: `{report['command']}`",
    ]


def _peak_row(name: str, t: dict[str, Any]) -> str:
    wrk = t.get("wrk") or {}
    wrk_cell = _fmt(wrk.get("rps"), 0) if "rps" in wrk else f"skipped ({wrk.get('skipped')})"
    if wrk.get("loadgen_bound"):
        wrk_cell += " ⚠"
    bound = " ⚠ load-generator bound" if t.get("loadgen_bound") else ""
    latencies = [_fmt(t[key]) for key in ("p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "errors")]
    cpu = [_fmt(t["cpu_percent"], 0), _fmt(t.get("cpu_ms_per_request"), 3)]
    capacity = _fmt(t.get("capacity_at_full_cpu_rps"), 0)
    return _row(target_label(name, t), _fmt(t["rps"], 0) + bound, wrk_cell, *latencies, *cpu, capacity)


def _knee_row(report: dict[str, Any], name: str, t: dict[str, Any]) -> str:
    k = t.get("knee") or {}
    a = report["at_70pct_peak"].get(name) or {}
    knee_cell = _knee_rps(k) if k.get("rps") else "none under 10 ms"
    w = report.get("at_70pct_peak_wrk", {}).get(name) or {}
    return (
        f"| {target_label(name, t)} | {knee_cell} "
        f"| {_fmt(k.get('p99_ms'))} | {_fmt(a.get('rps'), 0)} | {_fmt(a.get('p99_ms'))} "
        f"| {_fmt(w.get('rps'), 0)} | {_fmt(w.get('p50_ms'))} | {_fmt(w.get('p99_ms'))} "
        f"| {_fmt(w.get('cpu_percent'), 0)} |"
    )


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _target_rows(
    targets: dict[str, Any], row: Callable[[str, dict[str, Any]], str], skipped_cells: str | None
) -> list[str]:
    """A table's rows, one a target in ORDER; a skipped target's row says why, then skipped_cells (the empty cells
    of the rest of the row), or is left out where skipped_cells is None."""
    rows = []
    for name in ORDER:
        t = targets[name]
        if not t.get("skipped"):
            rows.append(row(name, t))
        elif skipped_cells is not None:
            rows.append(f"| {target_label(name, t)} | skipped: {t['skipped']} {skipped_cells}")
    return rows


def _knee_rps(knee: dict[str, Any]) -> str:
    """The knee's throughput, marked ≥ where the generator never pushed p99 over 10 ms."""
    return ("≥ " if knee.get("lower_bound") else "") + _fmt(knee.get("rps"), 0)


def best_peer_label(report: dict[str, Any]) -> str:
    best = report["targets"]["peer"]
    if best.get("skipped"):
        return "none measured"
    others = [
        f"{p['name']} {_fmt(p.get('wrk_rps') or p.get('rps'), 0)} req/s"
        if not p.get("skipped")
        else f"{p['name']} skipped"
        for p in report.get("peers", {}).values()
        if not p.get("best")
    ]
    return f"{best.get('name')}" + (f" (against {', '.join(others)})" if others else "")


def _placement(m: dict[str, Any]) -> str:
    p = m.get("placement") or {}
    if not p.get("pinned"):
        return "not pinned (servers and load generators share all cores)"
    return f"servers on core(s) {p['server_cores']}, load generators on core(s) {p['load_cores']} ({p['method']})"


def plot_cdf(path: Path, histograms: dict[str, Histogram], labels: dict[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, hist in histograms.items():
        if hist.count:
            xs, ys = hist.cdf()
            ax.step(xs, [100 * y for y in ys], where="post", label=labels.get(name, name))
    ax.axvline(P99_BUDGET_MS, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("requests answered within (%)")
    ax.set_title("Latency CDF at peak load (locust, exact histogram)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.85)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_throughput_p99(path: Path, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name in ORDER:
        t = report["targets"][name]
        if t.get("skipped"):
            continue
        # In the order the load rose: the fixed-rate steps, then the closed-loop peak.
        points = sorted(
            [s for s in t.get("steps", []) if s.get("p99_ms") is not None], key=lambda s: s.get("offered_rps") or 0
        )
        points.append({"rps": t["rps"], "p99_ms": t["p99_ms"]})
        ax.plot([p["rps"] for p in points], [p["p99_ms"] for p in points], marker="o", label=target_label(name, t))
        if (t.get("wrk") or {}).get("rps"):
            ax.scatter([t["wrk"]["rps"]], [t["wrk"]["p99_ms"]], marker="x", s=60, color=ax.lines[-1].get_color())
    ax.axhline(P99_BUDGET_MS, color="grey", linestyle="--", linewidth=1, label="p99 budget 10 ms")
    ax.set_yscale("log")
    ax.set_xlabel("throughput (req/s)")
    ax.set_ylabel("p99 latency (ms, log scale)")
    ax.set_title("Throughput vs p99 (o: locust steps and peak, x: wrk peak)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(out: Path, report: dict[str, Any], peak_histograms: dict[str, Histogram]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    labels = {n: target_label(n, report["targets"][n]) for n in ORDER}
    plot_cdf(out / "latency_cdf.png", peak_histograms, labels)
    plot_throughput_p99(out / "throughput_p99.png", report)
    plots = ["latency_cdf.png", "throughput_p99.png"]
    if plot_events_on_off(out / "events_on_off.png", report):
        plots.append("events_on_off.png")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(render_markdown(report, plots))
    return [out / "report.json", out / "report.md", *(out / p for p in plots)]
