"""Shared fixtures: a trained bundle, and real origin and edge processes on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import ssl
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from edgerec.cli.process import http_call
from edgerec.cli.services import Cluster

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "online_retail" / "transactions.csv.gz"


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.synthetic import write_synthetic_transactions

    return write_synthetic_transactions(tmp_path_factory.mktemp("data") / "transactions.csv.gz", seed=7)


@pytest.fixture(scope="session")
def bundle_dir(synthetic_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.train import train_bundle

    out = tmp_path_factory.mktemp("bundle")
    train_bundle(synthetic_csv, out, progress=False)
    return out


@pytest.fixture(scope="session")
def second_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model (trained on another synthetic shop), for model swaps and rollbacks."""
    from models.synthetic import write_synthetic_transactions
    from models.train import train_bundle

    data = write_synthetic_transactions(tmp_path_factory.mktemp("data2") / "transactions.csv.gz", seed=8)
    out = tmp_path_factory.mktemp("bundle2")
    train_bundle(data, out, progress=False)
    return out


@pytest.fixture
def cluster(tmp_path: Path, bundle_dir: Path) -> Iterator[Cluster]:
    """A started origin, edges of GB, DE and FR started on demand (edgerec.cli.services.Cluster), publishing the
    session's bundle; everything stopped at teardown."""
    c = Cluster(tmp_path, bundle_dir)
    c.start_origin()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path) -> Iterator[Cluster]:
    """One cluster shared by a module's tests, for tests that only read or that tolerate each other's changes."""
    c = Cluster(tmp_path_factory.mktemp("cluster"), bundle_dir)
    c.start_origin()
    try:
        yield c
    finally:
        c.stop()


def wait_until(
    predicate: Callable[[], object], timeout_s: float = 30.0, what: str = "condition", interval_s: float = 0.02
):
    """Poll until `predicate()` is truthy and return its value; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval_s)
    raise AssertionError(f"timed out waiting for {what}")


def served_certificate(port: int, context: ssl.SSLContext) -> bytes:
    """The DER certificate a TLS server on 127.0.0.1 shows a new connection."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert(binary_form=True)


def first_certificate_der(chain_file: Path) -> bytes:
    """The DER form of the first certificate of a PEM chain file."""
    end = "-----END CERTIFICATE-----"
    return ssl.PEM_cert_to_DER_cert(chain_file.read_text().split(end)[0] + end + "\n")


def replace_file(live: Path, renewed: Path) -> None:
    """Replace one live file the way a certificate agent does: write beside, rename over."""
    staged = live.with_suffix(".new")
    staged.write_bytes(renewed.read_bytes())
    os.replace(staged, live)


def renew_in_place(renewed: tuple[Path, Path], live: tuple[Path, Path]) -> None:
    """Replace a live (certificate, key) pair: each file renamed over, the key first."""
    replace_file(live[1], renewed[1])
    replace_file(live[0], renewed[0])


def make_offer(offer_id: str, sku: str, region: str = "GB", **overrides) -> dict:
    offer = {
        "id": offer_id,
        "sku": sku,
        "title": f"Item {sku}",
        "price": 9.99,
        "currency": "GBP",
        "regions": [region],
        "stock": 10,
    }
    offer.update(overrides)
    return offer


@contextlib.contextmanager
def stocked(cluster: Cluster, skus: list[str]) -> Iterator[Cluster]:
    """A cluster whose origin is started, with its bundle published as the active model and a GB offer of each sku;
    every process of it stopped after, whatever happened."""
    try:
        cluster.publish()
        for sku in skus:
            cluster.put_offer(make_offer(f"GB-{sku}", sku))
        yield cluster
    finally:
        cluster.stop()


@contextlib.contextmanager
def stocked_origin(directory: Path, bundle_dir: Path, skus: list[str], origin_env: dict[str, str]) -> Iterator[Cluster]:
    """A cluster of `directory` with its origin started under `origin_env`, then stocked (see stocked)."""
    cluster = Cluster(directory, bundle_dir, origin_env=origin_env)
    cluster.start_origin()
    with stocked(cluster, skus):
        yield cluster


@pytest.fixture(scope="session")
def catalog_skus(bundle_dir: Path) -> list[str]:
    import json

    return json.loads((bundle_dir / "manifest.json").read_text())["items"]


MakeOffer = Callable[..., dict]


class Pki:
    """Certificates made at test time (trustme): a CA, the origin's server certificate for 127.0.0.1, and edge client
    certificates naming their region; every file lives under the test's directory, none is committed."""

    def __init__(self, directory: Path) -> None:
        import trustme

        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.ca_file = self.write_ca(self.ca, "ca.pem")
        self.origin_cert, self.origin_key = self.issue("origin", "127.0.0.1", "localhost")

    def write_ca(self, ca, name: str) -> Path:
        path = self.directory / name
        ca.cert_pem.write_to_path(str(path))
        return path

    def issue(self, name: str, *identities: str, common_name: str | None = None, ca=None) -> tuple[Path, Path]:
        """(certificate chain file, private key file) of a new certificate from `ca` (this PKI's CA by default)."""
        leaf = (ca or self.ca).issue_cert(*identities, common_name=common_name)
        cert, key = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        return cert, key

    def edge_cert(self, region: str) -> tuple[Path, Path]:
        """A client certificate naming one edge region (CN and SAN DNS `edge.<region>`)."""
        name = f"edge.{region.lower()}"
        return self.issue(f"client-{region}", name, common_name=name)

    def client_context(self, cert: tuple[Path, Path] | None = None):
        from edgerec.core.tls import client_context

        return client_context(self.ca_file, *(cert or (None, None)))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def https_cluster(
    workdir: Path, bundle: Path, pki: Pki, *origin_args: str, admin_cert: tuple[Path, Path] | None = None
) -> Cluster:
    """A started origin serving HTTPS with the PKI's certificate; its probes and admin calls trust the PKI's CA."""
    cluster = Cluster(workdir, bundle)
    cluster.origin.args += ["--tls-cert", str(pki.origin_cert), "--tls-key", str(pki.origin_key), *origin_args]
    cluster.origin.scheme = "https"
    cluster.origin.tls = pki.client_context(admin_cert)
    cluster.start_origin()
    return cluster


def edge_tls_env(pki: Pki, ca_file: Path | None = None, cert: tuple[Path, Path] | None = None) -> dict[str, str]:
    """An edge's settings to verify the origin against `ca_file` (the PKI's CA) and present `cert` (mutual TLS)."""
    env = {"EDGEREC_ORIGIN_CA_FILE": str(ca_file or pki.ca_file)}
    if cert is not None:
        env.update(EDGEREC_CLIENT_CERT_FILE=str(cert[0]), EDGEREC_CLIENT_KEY_FILE=str(cert[1]))
    return env


def sync_error_count(edge) -> float:
    """An edge's edgerec_sync_errors_total."""
    _, _, body = http_call(edge.url, "GET", "/metrics", ssl_context=edge.tls)
    for line in body.decode().splitlines():
        if line.startswith("edgerec_sync_errors_total "):
            return float(line.split()[1])
    return 0.0


# PostgreSQL for the tests that need it (the development and CI machines run it; make test starts it).
PG_DSN = os.environ.get("EDGEREC_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_reachable() -> str | None:
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(PG_DSN, timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means: no database to test against
        return f"PostgreSQL not reachable at {PG_DSN} ({type(exc).__name__}: {exc}); .ci/run starts it"


# EDGEREC_INFRA_STRICT=1 (set by `make test`, so by CI): a part the suite needs that is missing fails its tests
# instead of skipping them.
STRICT = os.environ.get("EDGEREC_INFRA_STRICT") == "1"


def needs(missing: str | None) -> pytest.MarkDecorator:
    """Skip when a part is missing (`missing` says which and why), except under EDGEREC_INFRA_STRICT=1."""
    return pytest.mark.skipif(missing is not None and not STRICT, reason=missing or "")


def missing_part(reason: str) -> None:
    """Inside a test or fixture: skip, or fail under EDGEREC_INFRA_STRICT=1."""
    if STRICT:
        pytest.fail(f"{reason} (EDGEREC_INFRA_STRICT=1)")
    pytest.skip(reason)


PG_UNREACHABLE = _pg_reachable()
needs_pg = needs(PG_UNREACHABLE)

# NATS JetStream for the tests of the nats event sink (.ci/run and make test start it).
NATS_URL = os.environ.get("EDGEREC_TEST_NATS_URL", "nats://127.0.0.1:4222")


def _nats_down() -> str | None:
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(NATS_URL)
    try:
        socket.create_connection((where.hostname or "127.0.0.1", where.port or 4222), timeout=2).close()
        return None
    except OSError as exc:
        return f"NATS not reachable at {NATS_URL} ({exc}); .ci/run starts it"


NATS_DOWN = _nats_down()
needs_nats = needs(NATS_DOWN)


class PgSchema:
    """A schema of its own in the test database, dropped afterwards."""

    def __init__(self) -> None:
        self.name = f"edgerec_t_{secrets.token_hex(6)}"

    async def _execute(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def create(self) -> None:
        asyncio.run(self._execute(f"CREATE SCHEMA {self.name}"))

    def drop(self) -> None:
        asyncio.run(self._execute(f"DROP SCHEMA IF EXISTS {self.name} CASCADE"))

    @property
    def dsn(self) -> str:
        return f"{PG_DSN}?search_path={self.name}"


@pytest.fixture
def pg_schema():
    if PG_UNREACHABLE:
        missing_part(PG_UNREACHABLE)
    schema = PgSchema()
    schema.create()
    try:
        yield schema
    finally:
        schema.drop()


def readyz(edge) -> dict:
    """An edge's /readyz details (whatever its status)."""
    import json

    from edgerec.cli.process import http_call

    return json.loads(http_call(edge.url, "GET", "/readyz", timeout=5)[2])


def served(edge, request: dict) -> dict:
    """A personalized answer, which must be a 200."""
    from edgerec.cli.process import http_json

    status, answer = http_json(edge.url, "POST", "/v1/recommendations", request, timeout=5)
    assert status == 200, answer
    return answer


def seed(cluster: Cluster, catalog_skus: list[str], gb: int = 20, de: int = 0) -> Cluster:
    """Publish the cluster's model, `gb` GB offers of catalogue items (GB-<sku>) and the next `de` in DE (DE-<sku>,
    in EUR)."""
    cluster.publish()
    de_skus = catalog_skus[gb : gb + de]
    cluster.put_offers(
        [make_offer(f"GB-{sku}", sku) for sku in catalog_skus[:gb]]
        + [make_offer(f"DE-{sku}", sku, region="DE", currency="EUR") for sku in de_skus]
    )
    return cluster


def _seeded_offers(request: pytest.FixtureRequest) -> dict[str, int]:
    """How many offers the seeded clusters get: a module's SEEDED_OFFERS ({"gb": 30, "de": 10}), else 20 in GB."""
    return getattr(request.module, "SEEDED_OFFERS", {})


@pytest.fixture
def seeded(cluster, catalog_skus, request):
    """The cluster with its model published and 20 GB offers of catalogue items (or the module's SEEDED_OFFERS)."""
    return seed(cluster, catalog_skus, **_seeded_offers(request))


@pytest.fixture(scope="module")
def module_seeded(module_cluster, catalog_skus, request):
    """The module's shared cluster, seeded the same way, for tests that only read or tolerate each other's writes."""
    return seed(module_cluster, catalog_skus, **_seeded_offers(request))
