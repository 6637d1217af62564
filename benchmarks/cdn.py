"""A CDN cache in front of the edge for the benchmark: Varnish, with the project's own VCL.

The VCL is infra/varnish/edgerec.vcl (what a deployment runs) when the repository has it, else the
minimal one below: both add the shared secret on the way to the edge, cache GETs by URL and by
whatever the edge's `Vary` names (the geo header), honour `s-maxage`, and pass POSTs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from edgerec.cli.process import Service, free_port

from .traffic import SECRET_HEADER

REPO_VCL = Path(__file__).resolve().parents[1] / "infra" / "varnish" / "edgerec.vcl"

INSTALL_HINT = "apt-get install -y --no-install-recommends varnish"

FALLBACK_VCL = """vcl 4.1;

backend edge {{
    .host = "127.0.0.1";
    .port = "{port}";
    .connect_timeout = 1s;
    .first_byte_timeout = 5s;
}}

sub vcl_recv {{
    # The CDN's proof to the edge that its geo header can be trusted; a client's own copy is overwritten.
    set req.http.{secret_header} = "{secret}";
    if (req.method != "GET" && req.method != "HEAD") {{
        return (pass);
    }}
    unset req.http.Cookie;
    return (hash);
}}

sub vcl_deliver {{
    set resp.http.X-Cache = if(obj.hits > 0, "HIT", "MISS");
    unset resp.http.{secret_header};
}}
"""


def missing() -> str | None:
    """Why Varnish cannot run here, or None."""
    if not shutil.which("varnishd"):
        return f"varnishd not installed (install with: {INSTALL_HINT})"
    if not shutil.which("cc") and not shutil.which("gcc"):
        return "varnishd needs a C compiler to load its VCL (apt-get install -y gcc)"
    return None


def vcl_text(backend_port: int, secret: str) -> tuple[str, str]:
    """(VCL, where it came from): the repository's deployment VCL with its placeholders filled, or the fallback."""
    if REPO_VCL.is_file():
        text = REPO_VCL.read_text()
        for name, value in {"EDGE_HOST": "127.0.0.1", "EDGE_PORT": str(backend_port), "CDN_SECRET": secret}.items():
            text = text.replace("${" + name + "}", value)
        return text, str(REPO_VCL.relative_to(REPO_VCL.parents[2]))
    return FALLBACK_VCL.format(port=backend_port, secret=secret, secret_header=SECRET_HEADER), "benchmarks/cdn.py"


def varnish_process(workdir: Path, backend_port: int, secret: str) -> tuple[Service, str, str]:
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    vcl = workdir / "default.vcl"
    text, source = vcl_text(backend_port, secret)
    vcl.write_text(text)
    port, admin_port = free_port(), free_port()
    # -F: stay in the foreground so the pid is ours; -j none: no jail (the harness runs as the user it is).
    argv = [
        shutil.which("varnishd") or "varnishd",
        "-F",
        "-a",
        f"127.0.0.1:{port}",
        "-T",
        f"127.0.0.1:{admin_port}",
        "-f",
        str(vcl),
        "-s",
        "malloc,64m",
        "-n",
        str(workdir / "state"),
        "-j",
        "none",
    ]
    return (
        Service(name="varnish", argv=argv, port=port, log_path=workdir / "varnishd.log"),
        f"http://127.0.0.1:{port}",
        source,
    )


def cache_counters(workdir: Path) -> dict[str, int]:
    """MAIN.cache_hit / cache_miss / client_req from varnishstat (empty when it cannot be read)."""
    varnishstat = shutil.which("varnishstat")
    if not varnishstat:
        return {}
    try:
        out = subprocess.run(
            [varnishstat, "-n", str(workdir.resolve() / "state"), "-1", "-j"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        data = json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
    counters = data.get("counters", data)
    wanted = {
        "MAIN.cache_hit": "hits",
        "MAIN.cache_miss": "misses",
        "MAIN.client_req": "requests",
        "MAIN.s_pass": "passes",
    }
    return {name: int(counters[key]["value"]) for key, name in wanted.items() if key in counters}
