"""Where a server's CPU goes: py-spy samples its Python stacks under load; the samples become a flame graph (PNG),
the collapsed stacks (the input of any flame-graph tool) and a table of the functions with the most samples.

    from benchmarks.flame import Recorder, write_flame
    with Recorder(pid, seconds, DIR / "flame-edge.txt"): ...drive the load...
    write_flame(DIR / "flame-edge.txt", DIR / "flame-edge.png", "edge under wrk")

py-spy attaches to a running process (ptrace: root, or CAP_SYS_PTRACE), without pausing it (--nonblocking), at
`rate` samples a second; idle threads (the event loop waiting in epoll) are left out, so the graph is the CPU's.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

Stacks = Counter[tuple[str, ...]]


def py_spy() -> str | None:
    exe = Path(sys.executable).with_name("py-spy")
    return str(exe) if exe.exists() else shutil.which("py-spy")


class Recorder:
    """py-spy recording `pid` for `seconds` into collapsed stacks at `out` while the `with` block runs."""

    def __init__(self, pid: int, seconds: float, out: Path, rate: int = 250) -> None:
        self.pid, self.seconds, self.out, self.rate = pid, seconds, out, rate
        self.process: subprocess.Popen[bytes] | None = None
        self.error: str | None = None

    def __enter__(self) -> "Recorder":
        exe = py_spy()
        if exe is None:
            self.error = "py-spy not installed (pip install py-spy)"
            return self
        argv = [exe, "record", "--pid", str(self.pid), "--duration", str(max(1, int(self.seconds)))]
        argv += ["--rate", str(self.rate), "--format", "raw", "--nonblocking", "--output", str(self.out)]
        self.log = self.out.with_suffix(".log")
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.returncode != 0 or not self.out.exists():
            self.error = f"py-spy exited with {self.process.returncode}: {self.log.read_text(errors='replace')[-400:]}"


def read_collapsed(path: Path) -> Stacks:
    """py-spy's raw format: one `frame;frame;...;leaf count` line per distinct stack, outermost frame first."""
    stacks: Stacks = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def _function(frame: str) -> str:
    """`name (path/to/module.py:123)` -> `name (module.py)`: one row per function, whatever line sampled it."""
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.rsplit(':', 1)[0]).name})" if where else name


def top_functions(stacks: Stacks, n: int = 25) -> list[dict[str, Any]]:
    """The functions with the most samples at the top of the stack (self), with their share on the stack at all
    (inclusive)."""
    total = sum(stacks.values()) or 1
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for stack, count in stacks.items():
        for fn in {_function(f) for f in stack}:
            inclusive[fn] += count
        own[_function(stack[-1])] += count
    # Ordered by own samples (where the CPU is spent), then by inclusive ones (the callers that cost the most).
    ranked = sorted(inclusive, key=lambda fn: (-own[fn], -inclusive[fn]))[:n]
    return [
        {"function": fn, "inclusive": round(inclusive[fn] / total, 4), "self": round(own[fn] / total, 4)}
        for fn in ranked
    ]


def write_flame(collapsed: Path, png: Path, title: str, min_share: float = 0.004) -> dict[str, Any]:
    """The flame graph of `collapsed` as a PNG (frames under `min_share` of the samples left out) and its top
    functions; returns {"samples", "top", "png", "collapsed"}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stacks = read_collapsed(collapsed)
    total = sum(stacks.values())
    # Frames merged into a tree by their path from the root; each node's width is its samples.
    tree: dict[tuple[str, ...], int] = Counter()
    for stack, count in stacks.items():
        for depth in range(1, len(stack) + 1):
            tree[tuple(_function(f) for f in stack[:depth])] += count
    children: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for path in tree:
        children.setdefault(path[:-1], []).append(path)
    fig, ax = plt.subplots(figsize=(16, 9))
    cmap = plt.get_cmap("autumn")
    max_depth = 0

    def draw(parent: tuple[str, ...], x: float) -> None:
        nonlocal max_depth
        for path in sorted(children.get(parent, []), key=lambda p: -tree[p]):
            width = tree[path] / total
            if width < min_share:
                continue
            depth = len(path) - 1
            max_depth = max(max_depth, depth)
            ax.add_patch(
                plt.Rectangle((x, depth), width, 0.95, color=cmap((zlib.crc32(path[-1].encode()) % 100) / 100))
            )
            if width > 0.04:
                label = path[-1] if len(path[-1]) < width * 160 else path[-1][: int(width * 160)] + "…"
                ax.text(x + 0.002, depth + 0.45, label, fontsize=6.5, va="center", clip_on=True)
            draw(path, x)
            x += width

    if total:
        draw((), 0.0)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max_depth + 1)
    ax.set_xlabel(f"share of {total} samples (py-spy, CPU only; frames under {min_share:.1%} left out)")
    ax.set_ylabel("stack depth")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return {"samples": total, "top": top_functions(stacks), "png": png.name, "collapsed": collapsed.name}
