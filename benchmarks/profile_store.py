"""What the profile store costs the edge per call: `get` on a memory hit (the hot path), on a miss served from the
SQLite file, `apply_event` (an event, written before it returns) and `erase`, for the embedded store, and `get` and
`apply_event` on the region's Redis; plus the Python memory of held profiles against their accounted bytes, and
the time to open (and check) a store file.

    python -m benchmarks.profile_store --out DIR [--profiles 2000] [--rounds 5] [--redis-url URL | --redis-url none]

In one process, one event loop, no server: each figure is the median over rounds of the mean µs per call over
all profiles. Profiles are "small" (4 items) or "full" (64 recent events, 256 items with 8-character ids, the
codec's bounds). Writes DIR/report.json, DIR/report.md and DIR/profile_store.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Awaitable, Callable

from edge_node.profiles import EmbeddedProfileStore, Profile, ProfileCodec, ProfileEvent
from edge_node.profiles.memory import MemoryTier

SECRET = "benchmark-deployment-secret"


def _profile(codec: ProfileCodec, full: bool, seed: int) -> Profile:
    record = Profile()
    now = time.time()
    for i in range(300 if full else 4):
        record = codec.apply(record, ProfileEvent("purchase", (f"{seed % 97:02d}-{i:05d}",), now - 300 + i))
    return record


async def _per_call(calls: Callable[[str], Awaitable[Any]], keys: list[str], rounds: int) -> float:
    means = []
    for _ in range(rounds):
        started = time.perf_counter()
        for key in keys:
            await calls(key)
        means.append((time.perf_counter() - started) / len(keys) * 1e6)
    return statistics.median(means)


async def _embedded(work: Path, n: int, rounds: int) -> dict[str, float]:
    codec = ProfileCodec()
    figures: dict[str, float] = {}
    for size in ("small", "full"):
        store = EmbeddedProfileStore(work / size, SECRET, codec, budget_bytes=1 << 30)
        keys = [secrets.token_hex(16) for _ in range(n)]
        for i, key in enumerate(keys):
            await store.put_summary(key, _profile(codec, size == "full", i), 0.0)
        figures[f"get_hit_{size}_us"] = await _per_call(store.get, keys, rounds * 10)

        async def miss(key: str) -> Any:
            store._memory.pop(key)  # the benchmark empties memory first: every get reads the file
            return await store.get(key)

        figures[f"get_disk_{size}_us"] = await _per_call(miss, keys, rounds)
        event = ProfileEvent("click", ("00-00001",), time.time())
        figures[f"apply_event_{size}_us"] = await _per_call(lambda key: store.apply_event(key, event), keys, rounds)
        await store.close()
        started = time.perf_counter()
        reopened = EmbeddedProfileStore(work / size, SECRET, codec)
        figures[f"open_{size}_ms"] = (time.perf_counter() - started) * 1e3
        figures[f"file_{size}_mb"] = (work / size / "profiles.sqlite3").stat().st_size / 1e6
        figures[f"erase_{size}_us"] = await _per_call(reopened.erase, keys, 1)
        await reopened.close()
    return figures


def _memory(n: int) -> dict[str, float]:
    """What a held full profile costs as Python memory: in the store's memory tier (its encoded form, what the
    embedded store holds) and, for comparison, as decoded objects (what it held before)."""
    codec = ProfileCodec()
    encoded = [codec.encode(_profile(codec, True, i)) for i in range(n)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = [codec.decode(data) for data in encoded]
    decoded_bytes = tracemalloc.get_traced_memory()[0] - before
    tier = MemoryTier(2**40)
    before = tracemalloc.get_traced_memory()[0]
    for i, record in enumerate(held):
        tier.put(f"{i:032x}", codec.encode(record), len(encoded[i]), 0.0)
    tier_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    accounted = sum(len(data) + 32 for data in encoded)
    assert len(held) == n == len(tier)
    return {
        "full_encoded_bytes": accounted / n,
        "full_python_bytes": tier_bytes / n,
        "python_per_accounted_byte": tier_bytes / accounted,
        "full_decoded_python_bytes": decoded_bytes / n,
    }


async def _redis(url: str, n: int, rounds: int) -> dict[str, float]:
    from edge_node.profiles.redis_store import RedisProfileStore

    codec = ProfileCodec()
    prefix = f"edgerec-bench:{secrets.token_hex(6)}:"
    store = RedisProfileStore(
        url, SECRET, codec, prefix=prefix, retention_s=3600, read_timeout_s=1.0, write_timeout_s=1.0
    )
    figures: dict[str, float] = {}
    keys = [secrets.token_hex(16) for _ in range(n)]
    try:
        for size in ("small", "full"):
            for i, key in enumerate(keys):
                await store.put_summary(key, _profile(codec, size == "full", i), 0.0)
            figures[f"redis_get_{size}_us"] = await _per_call(store.get, keys, rounds)
            event = ProfileEvent("click", ("00-00001",), time.time())
            figures[f"redis_apply_event_{size}_us"] = await _per_call(
                lambda k: store.apply_event(k, event), keys, rounds
            )
        figures["redis_misses_during_run"] = store.stats.misses
    finally:
        for key in keys:
            await store.erase(key)
        await store.close()
    return figures


def _render(report: dict[str, Any]) -> str:
    f = report["figures"]
    lines = [
        "# Profile store: cost per call",
        "",
        f"{report['machine']['python']} on {report['machine']['cpus']} CPUs; {report['settings']['profiles']} "
        f"profiles, median of {report['settings']['rounds']} rounds. Command: `{report['command']}`",
        "",
        "| call | small profile | full profile |",
        "|---|---|---|",
    ]
    for label, key in (
        ("embedded get, memory hit (µs)", "get_hit"),
        ("embedded get, from the file (µs)", "get_disk"),
        ("embedded apply_event (µs)", "apply_event"),
        ("embedded erase (µs)", "erase"),
        ("open + check the file (ms)", "open"),
        ("file size (MB)", "file"),
        ("Redis get (µs)", "redis_get"),
        ("Redis apply_event (µs)", "redis_apply_event"),
    ):
        unit = "ms" if key == "open" else "mb" if key == "file" else "us"
        small, full = f.get(f"{key}_small_{unit}"), f.get(f"{key}_full_{unit}")
        if small is not None:
            lines.append(f"| {label} | {small:.1f} | {full:.1f} |")
    lines += [
        "",
        f"A full profile: {f['full_encoded_bytes']:.0f} accounted bytes (encoded + key), "
        f"{f['full_python_bytes']:.0f} bytes held in the memory tier ({f['python_per_accounted_byte']:.2f}x; "
        f"decoded it would take {f['full_decoded_python_bytes']:.0f}): the memory budget counts encoded bytes.",
        "",
    ]
    return "\n".join(lines)


def _plot(path: Path, figures: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in figures if k.endswith("_us") and not k.startswith("erase")]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.barh([n.removesuffix("_us") for n in names], [figures[n] for n in names])
    ax.set_xscale("log")
    ax.set_xlabel("µs per call (log scale)")
    ax.set_title("Profile store: cost per call")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_store", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--profiles", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="'none' to leave Redis out")
    args = parser.parse_args(argv)
    if args.profiles < 1 or args.rounds < 1:
        parser.error("--profiles and --rounds are at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgerec-profiles-bench-") as work:
        figures = asyncio.run(_embedded(Path(work), args.profiles, args.rounds))
    figures.update(_memory(min(args.profiles, 1000)))
    if args.redis_url != "none":
        figures.update(asyncio.run(_redis(args.redis_url, args.profiles, args.rounds)))
    report = {
        "command": " ".join(["python -m benchmarks.profile_store", *(argv or sys.argv[1:])]),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "settings": {"profiles": args.profiles, "rounds": args.rounds, "redis": args.redis_url != "none"},
        "figures": {k: round(v, 2) for k, v in figures.items()},
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "report.md").write_text(_render(report))
    _plot(args.out / "profile_store.png", figures)
    print(_render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
