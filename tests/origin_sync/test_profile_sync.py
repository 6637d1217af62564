"""Profile summaries from a real origin process to edge replicas (real syncers, signed and verified), on SQLite and
PostgreSQL: imported order history reaches only the edges of each shopper's regions, a changed profile ships alone,
an erasure reaches every edge, and an edge that takes a snapshot loads its regions' summaries page by page.

The orders are the first rows of the real Online Retail file (/work/shared/data/online_retail), cut into the
test's temporary directory."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections import defaultdict
from pathlib import Path

import pytest

from edge_node.profiles.codec import ProfileCodec
from edgerec.cli.process import http_call
from edgerec.cli.profiles_admin import order_events
from edgerec.cli.services import Cluster, ensure_signing_keys
from origin_sync.replica.state import Replica
from origin_sync.replica.syncer import Syncer
from origin_sync.wire.events import pseudonym_key, pseudonymize
from origin_sync.wire.profiles import ProfileChange, ProfileEvent, encode_summary, fold
from origin_sync.wire.protocol import KIND_DELTAS, OP_PROFILE_UPSERT, IntegrityError, unpack
from origin_sync.wire.signing import Verifier, open_envelope
from tests.cli_support import assert_one_line_error, run_cli
from tests.conftest import PG_UNREACHABLE, SHARED_DATA, missing_part

ORDER_ROWS = 20_000  # about 400 shoppers, GB and a few dozen of DE, FR and others


@pytest.fixture(scope="module")
def orders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SHARED_DATA.is_file():
        missing_part(f"the Online Retail data at {SHARED_DATA}")
    path = tmp_path_factory.mktemp("orders") / "orders.csv"
    with gzip.open(SHARED_DATA, "rt", encoding="utf-8", newline="") as source, path.open("w") as out:
        for n, line in enumerate(source):
            if n > ORDER_ROWS:
                break
            out.write(line)
    return path


class Follower:
    """An edge's replica of some regions, followed by a real Syncer; what reached its profile hook, in order."""

    def __init__(self, cluster: Cluster, regions: tuple[str, ...]) -> None:
        self.cluster, self.regions = cluster, regions
        self.replica: Replica | None = None
        self.changes: list[ProfileChange] = []
        self.profiles: dict[str, ProfileChange] = {}

    async def on_replica(self, replica: Replica, syncer: Syncer) -> None:
        self.replica = replica

    async def on_profiles(self, changes: tuple[ProfileChange, ...]) -> None:
        for change in changes:
            self.changes.append(change)
            if change.summary is None:
                self.profiles.pop(change.pseudonym, None)
            else:
                self.profiles[change.pseudonym] = change

    def syncer(self) -> Syncer:
        token = self.cluster.region_tokens.get(self.regions[0]) if len(self.regions) == 1 else None
        return Syncer(
            origin_url=self.cluster.origin.url,
            regions=self.regions,
            token=token or self.cluster.sync_token,
            on_replica=self.on_replica,
            on_profiles=self.on_profiles,
            verifier=Verifier.from_config(str(ensure_signing_keys(self.cluster.workdir)[1])),
            replica=self.replica,
            wait_s=1.0,
        )


def follow(followers: list[Follower], version: int, timeout_s: float = 60.0) -> None:
    """Run the followers' syncers until each replica reaches `version`."""

    async def main() -> None:
        tasks = [asyncio.create_task(f.syncer().run()) for f in followers]
        deadline = time.monotonic() + timeout_s
        try:
            while not all(f.replica is not None and f.replica.version >= version for f in followers):
                assert time.monotonic() < deadline, f"followers not at version {version}"
                await asyncio.sleep(0.05)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def _cli_env(cluster: Cluster) -> dict[str, str]:
    return {"EDGEREC_PSEUDONYM_KEY": cluster.pseudonym_key, "EDGEREC_ORIGIN_URL": cluster.origin.url}


def _import(cluster: Cluster, path: Path, *extra: str):
    return run_cli(
        "profiles", "import", "--orders", str(path), *extra, admin_token=cluster.admin_token, env=_cli_env(cluster)
    )


def _expected(cluster: Cluster, orders: Path) -> tuple[dict[str, set[str]], dict[str, list[ProfileEvent]]]:
    """By pseudonym: the regions each shopper was seen in, and their events, computed from the file here."""
    regions: dict[str, set[str]] = defaultdict(set)
    events: dict[str, list[ProfileEvent]] = defaultdict(list)
    for pseudonym, key, kind, item, ts, region in order_events(orders, pseudonym_key(cluster.pseudonym_key), False):
        events[pseudonym].append(ProfileEvent(key, kind, item, ts))
        if region:
            regions[pseudonym].add(region)
    return regions, events


@pytest.fixture(params=["sqlite", "postgres"])
def profile_cluster(request: pytest.FixtureRequest, tmp_path: Path):
    dsn = None
    if request.param == "postgres":
        if PG_UNREACHABLE:
            missing_part(PG_UNREACHABLE)
        dsn = request.getfixturevalue("pg_schema").dsn
    cluster = Cluster(tmp_path, dsn=dsn)
    cluster.start_origin()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_imported_history_reaches_only_the_edges_of_each_shoppers_regions(profile_cluster, orders):
    cluster = profile_cluster
    gb, de, fr = (Follower(cluster, (r,)) for r in ("GB", "DE", "FR"))
    follow([gb, de, fr], 0)  # snapshots at version 0: what follows arrives as deltas
    result = _import(cluster, orders)
    assert result.returncode == 0, result.stderr
    version = int(result.stdout.split("data version ")[1])
    follow([gb, de, fr], version)
    regions, events = _expected(cluster, orders)
    for follower in (gb, de, fr):
        (region,) = follower.regions
        assert set(follower.profiles) == {p for p, r in regions.items() if region in r}
        assert len(follower.changes) == len(follower.profiles)  # one change per shopper: batches keep shoppers whole
    assert len(gb.profiles) > 300 and len(de.profiles) >= 3 and len(fr.profiles) >= 3
    nowhere = set(events) - set(regions)
    assert not nowhere & (set(gb.profiles) | set(de.profiles) | set(fr.profiles))
    # Each summary is exactly the fold of the shopper's events, and the edge's codec decodes and merges it.
    codec = ProfileCodec()
    for pseudonym, change in list(gb.profiles.items())[:50]:
        summary, summary_ts = fold(events[pseudonym])
        assert change.summary == encode_summary(summary) and change.summary_ts == summary_ts
        merged = codec.merge(None, codec.decode(change.summary), change.summary_ts)
        assert sum(s.count for s in merged.items.values()) >= min(len(events[pseudonym]), 1)

    # Importing the file again changes nothing: no new event, no change in the log.
    again = _import(cluster, orders, "--no-progress")
    assert again.returncode == 0, again.stderr
    assert " 0 new, 0 profiles changed, data version {}".format(version) in again.stdout, again.stdout
    # A new edge of DE takes a snapshot (no profiles in it) and loads its region's summaries from signed pages.
    # They are in before its replica is handed over (and so before a copy on disk would stand for them).
    late = Follower(cluster, ("DE",))
    follow([late], version)
    assert late.profiles == de.profiles and late.replica is not None and late.replica.version == version


def test_a_changed_profile_ships_alone_in_a_signed_delta(profile_cluster, orders):
    cluster = profile_cluster
    gb = Follower(cluster, ("GB",))
    follow([gb], 0)
    version = int(_import(cluster, orders, "--no-progress").stdout.split("data version ")[1])
    follow([gb], version)
    shopper = "17850"
    pseudonym = pseudonymize(pseudonym_key(cluster.pseudonym_key), shopper)
    assert pseudonym in gb.profiles
    answer = cluster.admin(
        "POST",
        "/v1/admin/profiles/import",
        {"events": [[pseudonym, "order:999999:22423", "purchase", "22423", 1_320_000_000, "GB"]]},
    )
    assert answer["profiles_changed"] == 1 and answer["data_version"] == version + 1
    # The delta batch the GB edge gets: exactly this one profile, a few hundred bytes.
    status, _, body = http_call(
        cluster.origin.url,
        "GET",
        f"/v1/sync/deltas?regions=GB&since={version}&wait=0",
        headers={"Authorization": f"Bearer {cluster.region_tokens['GB']}"},
    )
    assert status == 200
    verifier = Verifier.from_config(str(ensure_signing_keys(cluster.workdir)[1]))
    batch = open_envelope(body, KIND_DELTAS, verifier)
    changes = [unpack(c["body"]) for c in batch["changes"]]
    assert [(c["op"], c["pseudonym"]) for c in changes] == [(OP_PROFILE_UPSERT, pseudonym)]
    assert len(body) < 4096, len(body)
    # Signed like every batch (here compressed, too): one byte changed and the edge refuses it.
    tampered = bytearray(body)
    tampered[-40] ^= 1
    with pytest.raises(IntegrityError):
        open_envelope(bytes(tampered), KIND_DELTAS, verifier)
    follow([gb], version + 1)
    assert gb.changes[-1].pseudonym == pseudonym and len(gb.changes) == len(gb.profiles) + 1


def test_erasure_reaches_every_edge_and_export_shows_what_is_held(profile_cluster, orders):
    cluster = profile_cluster
    gb, fr = Follower(cluster, ("GB",)), Follower(cluster, ("FR",))
    follow([gb, fr], 0)
    version = int(_import(cluster, orders, "--no-progress").stdout.split("data version ")[1])
    follow([gb, fr], version)
    shopper = "17850"
    pseudonym = pseudonymize(pseudonym_key(cluster.pseudonym_key), shopper)
    exported = run_cli(
        "profiles", "export", "--shopper", shopper, admin_token=cluster.admin_token, env=_cli_env(cluster)
    )
    assert exported.returncode == 0, exported.stderr
    data = json.loads(exported.stdout)
    assert data["pseudonym"] == pseudonym and data["profile"]["regions"] == ["GB"]
    assert data["profile"]["summary"]["items"] and data["profile"]["events"]
    assert shopper not in exported.stdout  # the origin holds the pseudonym only

    erased = run_cli("events", "erase", "--shopper", shopper, admin_token=cluster.admin_token, env=_cli_env(cluster))
    assert erased.returncode == 0, erased.stderr
    assert "every edge is sent the erasure" in erased.stdout
    follow([gb, fr], version + 1)
    for follower in (gb, fr):  # FR never held the shopper, and is told all the same
        assert follower.changes[-1] == ProfileChange(pseudonym, None, 0.0)
    assert pseudonym not in gb.profiles
    gone = run_cli("profiles", "export", "--shopper", shopper, admin_token=cluster.admin_token, env=_cli_env(cluster))
    assert_one_line_error(gone, "HTTP 404")
    # Neither the id nor the pseudonym is left in the origin's log or its audit log (both outlive an erasure).
    log = cluster.origin.log_path.read_text()
    assert shopper not in log and pseudonym not in log
    assert pseudonym not in json.dumps(cluster.admin("GET", "/v1/admin/audit?limit=1000"))


def test_import_refuses_a_bad_file_in_one_line(cluster_for_cli, tmp_path):
    cluster = cluster_for_cli
    missing = _import(cluster, tmp_path / "nope.csv")
    assert_one_line_error(missing, "no such file")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("InvoiceNo,StockCode,Quantity\n1,2,3\n")
    assert_one_line_error(_import(cluster, wrong), "missing columns", "CustomerID")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 not really")
    assert_one_line_error(_import(cluster, garbage), "Parquet")
    no_key = run_cli(
        "profiles",
        "import",
        "--orders",
        str(wrong),
        admin_token=cluster.admin_token,
        env={"EDGEREC_ORIGIN_URL": cluster.origin.url, "EDGEREC_PSEUDONYM_KEY": ""},
    )
    assert_one_line_error(no_key, "EDGEREC_PSEUDONYM_KEY")


def test_import_shows_progress_and_parquet_gives_the_same_summaries(cluster_for_cli, orders, tmp_path):
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    cluster = cluster_for_cli
    result = _import(cluster, orders)
    assert result.returncode == 0, result.stderr
    assert "importing orders" in result.stderr and "100%" in result.stderr
    table = pcsv.read_csv(
        orders,
        convert_options=pcsv.ConvertOptions(
            column_types={"InvoiceNo": "string", "StockCode": "string", "CustomerID": "int64"}
        ),
    )
    parquet = tmp_path / "orders.parquet"
    pq.write_table(table, parquet)
    again = _import(cluster, parquet, "--no-progress")
    assert again.returncode == 0, again.stderr
    assert " 0 new, 0 profiles changed" in again.stdout, again.stdout


@pytest.fixture(scope="module")
def cluster_for_cli(tmp_path_factory: pytest.TempPathFactory):
    cluster = Cluster(tmp_path_factory.mktemp("cli"))
    cluster.start_origin()
    try:
        yield cluster
    finally:
        cluster.stop()
