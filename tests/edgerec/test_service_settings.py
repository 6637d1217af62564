"""Each service's settings come from flags, `EDGEREC_...` variables and a settings file (TOML or JSON), in that
order of precedence over the defaults; a bad value or an unknown key stops the real `edgerec` command with one line
naming the setting, and exit 2."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from edge_node.settings import EdgeSettings
from edgerec.cli.process import Service, free_port, http_json
from edgerec.cli.services import ensure_signing_keys
from edgerec.core.settings import SettingError
from origin_sync.origin.settings import OriginSettings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("EDGEREC_"):
            monkeypatch.delenv(name)
    return monkeypatch


def run_edgerec(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EDGEREC_")}
    return subprocess.run(
        [sys.executable, "-m", "edgerec", *args],
        env={**base, **(env or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line_refusal(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "service, flags, env, fragments",
    [
        ("edge", [], {"EDGEREC_EDGE_PORT": "abc"}, ("--port/EDGEREC_EDGE_PORT", "'abc'", "from EDGEREC_EDGE_PORT")),
        ("edge", ["--port", "abc"], {}, ("--port/EDGEREC_EDGE_PORT", "'abc'", "from --port")),
        ("edge", ["--port", "70000"], {}, ("--port/EDGEREC_EDGE_PORT", "70000 is not a TCP port")),
        ("edge", [], {"EDGEREC_EVENTS": "maybe"}, ("--events/EDGEREC_EVENTS", "'on' or 'off'")),
        ("edge", ["--workers", "many"], {}, ("--workers/EDGEREC_WORKERS", "'many'")),
        ("edge", ["--untrusted-cdn-headers", "drop"], {}, ("--untrusted-cdn-headers/EDGEREC_UNTRUSTED_CDN_HEADERS",)),
        ("edge", ["--profile-store", "memcached"], {}, ("--profile-store/EDGEREC_PROFILE_STORE", "'memcached'")),
        ("edge", ["--profile-retention", "0"], {}, ("--profile-retention/EDGEREC_PROFILE_RETENTION", "36500 days")),
        ("edge", [], {"EDGEREC_PROFILE_BUDGET_MB": "0"}, ("--profile-budget-mb/EDGEREC_PROFILE_BUDGET_MB", "MiB")),
        ("edge", ["--profile-read-timeout-ms", "-1"], {}, ("--profile-read-timeout-ms", "more than 0")),
        ("origin", [], {"EDGEREC_ORIGIN_PORT": "abc"}, ("--port/EDGEREC_ORIGIN_PORT", "from EDGEREC_ORIGIN_PORT")),
        ("origin", ["--port", "abc"], {}, ("--port/EDGEREC_ORIGIN_PORT", "'abc'", "from --port")),
        ("origin", ["--max-wait", "forever"], {}, ("--max-wait/EDGEREC_MAX_WAIT_S", "'forever'")),
        ("origin", [], {"EDGEREC_ADMIN_RATE_LIMIT_BURST": "1.5"}, ("--admin-rate-limit-burst",)),
        ("origin", [], {"EDGEREC_ORIGIN_BEHIND_TLS_PROXY": "perhaps"}, ("--behind-tls-proxy",)),
        ("origin", ["--log-retention", "a week"], {}, ("--log-retention/EDGEREC_LOG_RETENTION", "number of versions")),
        ("edge", [], {"EDGEREC_TRACE_SAMPLE": "often"}, ("--trace-sample/EDGEREC_TRACE_SAMPLE", "ratio from 0 to 1")),
        ("origin", ["--trace-sample", "2"], {}, ("--trace-sample/EDGEREC_TRACE_SAMPLE", "ratio from 0 to 1")),
        ("origin", [], {"EDGEREC_TRACE_EXPORTER": "zipkin"}, ("--trace-exporter/EDGEREC_TRACE_EXPORTER", "zipkin")),
        ("edge", [], {"EDGEREC_DRAIN_S": "-1"}, ("--drain/EDGEREC_DRAIN_S", "from 0 to 300 seconds")),
        ("origin", ["--shutdown-timeout", "0"], {}, ("--shutdown-timeout/EDGEREC_SHUTDOWN_TIMEOUT_S", "1 to 3600")),
        # The drain window must fit in the shutdown timeout, with a second for the exit.
        (
            "edge",
            ["--drain", "30"],
            {"EDGEREC_SHUTDOWN_TIMEOUT_S": "30"},
            ("EDGEREC_SHUTDOWN_TIMEOUT_S (30 s) must exceed", "EDGEREC_DRAIN_S (30 s)"),
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_malformed_value_stops_the_service_with_one_line_naming_it(service, flags, env, fragments):
    line = assert_one_line_refusal(
        run_edgerec([service, "serve", "--regions", "GB", *flags], env)
        if service == "edge"
        else run_edgerec([service, "serve", *flags], env),
        *fragments,
    )
    assert line.startswith("edgerec: configuration error: ")


@pytest.mark.parametrize("service", ["edge", "origin"])
@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_an_unknown_key_of_the_settings_file_is_refused_with_a_suggestion(service, suffix, tmp_path):
    config = tmp_path / f"settings{suffix}"
    config.write_text("prot = 9000\n" if suffix == ".toml" else json.dumps({"prot": 9000}))
    assert_one_line_refusal(
        run_edgerec([service, "serve", "--config", str(config)]),
        str(config),
        "unknown setting 'prot'",
        "did you mean 'port'?",
    )


def test_a_bad_value_or_an_unreadable_settings_file_is_one_line_naming_the_file(tmp_path):
    config = tmp_path / "origin.toml"
    config.write_text('max_wait = "soon"\n')
    assert_one_line_refusal(
        run_edgerec(["origin", "serve", "--config", str(config)]),
        "--max-wait/EDGEREC_MAX_WAIT_S",
        "'soon'",
        f"from {config}",
    )
    config.write_text("max_wait = \n")
    assert_one_line_refusal(run_edgerec(["origin", "serve", "--config", str(config)]), "not valid TOML")
    assert_one_line_refusal(
        run_edgerec(["edge", "serve", "--config", str(tmp_path / "none.json")]), "--config: cannot read"
    )
    (tmp_path / "edge.yaml").write_text("port: 1\n")
    assert_one_line_refusal(
        run_edgerec(["edge", "serve", "--config", str(tmp_path / "edge.yaml")]), "neither .toml nor .json"
    )


def test_an_unknown_flag_is_one_line_and_exit_2():
    assert_one_line_refusal(run_edgerec(["edge", "serve", "--prot", "1"]), "unrecognized arguments: --prot")


def test_a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default(clean_env, tmp_path):
    config = tmp_path / "edge.toml"
    config.write_text('port = 7001\nmax_k = 50\nsync_wait = 5.0\nregions = "GB"\nevents = "off"\n')
    clean_env.setenv("EDGEREC_EDGE_PORT", "7002")
    clean_env.setenv("EDGEREC_MAX_K", "60")
    settings = EdgeSettings.load({"port": "7003"}, config)
    assert settings.port == 7003  # flag over environment over file
    assert settings.max_k == 60  # environment over file
    assert (settings.sync_wait, settings.regions, settings.events) == (5.0, "GB", "off")  # file over default
    assert settings.max_body_bytes == 65536  # default
    clean_env.delenv("EDGEREC_EDGE_PORT")
    assert EdgeSettings.load({}, config).port == 7001
    json_config = tmp_path / "origin.json"
    json_config.write_text(json.dumps({"max_wait": 12, "behind_tls_proxy": True, "port": 9100}))
    clean_env.setenv("EDGEREC_ORIGIN_BEHIND_TLS_PROXY", "no")
    origin = OriginSettings.load({}, json_config)
    assert (origin.max_wait, origin.behind_tls_proxy, origin.port) == (12.0, False, 9100)
    assert OriginSettings.load({"behind_tls_proxy": "true"}, json_config).behind_tls_proxy is True


def test_a_variable_named_like_a_field_is_not_a_setting(clean_env):
    # Only the documented EDGEREC_ names are read: a stray `port` or `production` in the environment is not.
    clean_env.setenv("port", "1234")
    clean_env.setenv("production", "true")
    settings = OriginSettings.load()
    assert (settings.port, settings.production) == (8080, False)
    with pytest.raises(SettingError, match="--production: 'sometimes'"):
        OriginSettings.load({"production": "sometimes"})


def test_a_real_origin_listens_where_its_settings_file_and_environment_say(tmp_path):
    private_key, _ = ensure_signing_keys(tmp_path)
    file_port, env_port = free_port(), free_port()
    config = tmp_path / "origin.toml"
    config.write_text(
        f'port = {file_port}\ndb = "{tmp_path / "o.db"}"\nblob_dir = "{tmp_path / "blobs"}"\nmax_wait = 2\n'
    )
    admin = secrets.token_urlsafe(24)
    origin = Service(
        name="origin",
        port=env_port,
        log_path=tmp_path / "origin.log",
        cwd=REPO,
        args=["origin", "serve", "--config", str(config)],
        env={
            "EDGEREC_ORIGIN_PORT": str(env_port),
            "EDGEREC_ADMIN_TOKEN": admin,
            "EDGEREC_SYNC_TOKEN": secrets.token_urlsafe(24),
            "EDGEREC_SIGNING_KEY": str(private_key),
        },
    )
    origin.start()
    try:
        origin.wait_ready("/readyz")  # on the environment's port, not the file's
        status, answer = http_json(origin.url, "GET", "/v1/admin/status", headers={"Authorization": f"Bearer {admin}"})
        assert status == 200 and answer["data_version"] == 0
        assert (tmp_path / "o.db").exists()  # the file's database path
    finally:
        origin.stop()
    assert origin.process.returncode == 0, origin.log_tail()
