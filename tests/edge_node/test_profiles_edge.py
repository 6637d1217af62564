"""Shopper profiles on the serving edge, through real edge processes: a request with only a shopper id is answered
from the edge's own profile store, a posted event changes the shopper's next answer (read-your-writes, on one edge
and across two replicas sharing the region's Redis), profiles survive a restart and a SIGKILL, a damaged store
file is refused and the edge starts empty, and bad cart or shopper_id values get a 422."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from edgerec.cli.process import http_call, http_json
from tests.conftest import missing_part, served, wait_until
from tests.edge_node.profiles.profile_backends import REDIS_URL, redis_down

SEEDED_OFFERS = {"gb": 40}


def answer_for(edge, shopper: str, **extra) -> dict:
    return served(edge, {"shopper_id": shopper, "region": "GB", "k": 10, **extra})


def offer_ids(answer: dict) -> list[str]:
    return [offer["offer_id"] for offer in answer["offers"]]


def post_event(edge, shopper: str, kind: str, offer: str, request_id: str) -> None:
    event = {"type": kind, "request_id": request_id, "offer_ids": [offer], "shopper_id": shopper, "region": "GB"}
    if kind == "purchase":
        event.update(value=9.99, currency="GBP")
    status, body = http_json(edge.url, "POST", "/v1/events", {"events": [event]}, timeout=5)
    assert status == 202, body


def buy_top_offer(edge, shopper: str) -> tuple[dict, str]:
    """The shopper's answer, and the top offer of it, bought (the 202 has come back)."""
    before = answer_for(edge, shopper)
    bought = before["offers"][0]["offer_id"]
    post_event(edge, shopper, "purchase", bought, before["request_id"])
    return before, bought


def metric(edge, name: str) -> float:
    _, _, body = http_call(edge.url, "GET", "/metrics", timeout=5)
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not on /metrics")


@pytest.fixture(scope="module")
def gb_edge(module_seeded):
    return module_seeded.start_edge("GB")


def test_a_shopper_id_alone_is_answered_from_the_profile_the_edge_learned_from_their_purchase(gb_edge):
    shopper = "profile-shopper-1"
    before, bought = buy_top_offer(gb_edge, shopper)
    assert before["profile"] == "miss"  # unknown until the event
    after = answer_for(gb_edge, shopper)
    assert after["profile"] == "hit"
    assert bought not in offer_ids(after)  # just bought (--just-bought-days 1): not offered again
    assert offer_ids(after) != offer_ids(before)[1:11]  # the model ranked from the new history, not only the rule
    # Another shopper, unknown to the edge, still gets the anonymous answer.
    other = answer_for(gb_edge, "profile-shopper-never-seen")
    assert other["profile"] == "miss" and offer_ids(other) == offer_ids(before)


def test_an_add_to_cart_changes_the_next_answer_and_the_cart_is_not_offered_again(gb_edge):
    shopper = "profile-shopper-2"
    _, _bought = buy_top_offer(gb_edge, shopper)
    with_purchase = answer_for(gb_edge, shopper)
    carted = with_purchase["offers"][0]["offer_id"]
    post_event(gb_edge, shopper, "add_to_cart", carted, with_purchase["request_id"])
    with_cart = answer_for(gb_edge, shopper)
    assert with_cart["profile"] == "hit" and carted not in offer_ids(with_cart)
    scores_before = {o["offer_id"]: o["score"] for o in with_purchase["offers"]}
    scores_after = {o["offer_id"]: o["score"] for o in with_cart["offers"]}
    common = set(scores_before) & set(scores_after)
    assert common and any(abs(scores_before[o] - scores_after[o]) > 1e-6 for o in common)


def test_the_requests_cart_is_context_and_is_not_offered(gb_edge):
    anonymous = answer_for(gb_edge, "profile-shopper-3")
    in_cart = offer_ids(anonymous)[:2]
    with_cart = answer_for(gb_edge, "profile-shopper-3", cart=in_cart)
    assert with_cart["profile"] == "miss"  # a cart is context, not a profile
    assert not set(in_cart) & set(offer_ids(with_cart))
    assert [o["score"] for o in with_cart["offers"]] != [o["score"] for o in anonymous["offers"]][2:]


def test_recent_items_in_the_request_take_precedence_over_the_profile(gb_edge, catalog_skus):
    shopper = "profile-shopper-4"
    buy_top_offer(gb_edge, shopper)
    assert answer_for(gb_edge, shopper)["profile"] == "hit"
    sent = served(gb_edge, {"recent_items": catalog_skus[5:8], "k": 10})
    with_items = answer_for(gb_edge, shopper, recent_items=catalog_skus[5:8])
    assert with_items["profile"] == "request"
    assert offer_ids(with_items) == offer_ids(sent)  # the stored profile was not read
    assert served(gb_edge, {"k": 3})["profile"] == "miss"  # no shopper at all


@pytest.mark.parametrize(
    "body, field",
    [
        ({"shopper_id": "", "cart": []}, "shopper_id"),
        ({"shopper_id": "x" * 129}, "shopper_id"),
        ({"shopper_id": 42}, "shopper_id"),
        ({"shopper_id": "s", "cart": "GB-1"}, "cart"),
        ({"shopper_id": "s", "cart": ["has space"]}, "cart[0]"),
        ({"shopper_id": "s", "cart": [""]}, "cart[0]"),
        ({"shopper_id": "s", "cart": ["ok", 7]}, "cart[1]"),
        ({"shopper_id": "s", "cart": ["x" * 129]}, "cart[0]"),
        ({"shopper_id": "s", "cart": [f"GB-{i}" for i in range(101)]}, "cart"),
    ],
)
def test_bad_cart_or_shopper_id_values_get_a_422_naming_the_field(gb_edge, body, field):
    status, answer = http_json(gb_edge.url, "POST", "/v1/recommendations", {"region": "GB", **body}, timeout=5)
    assert status == 422, answer
    assert answer["error"]["code"] == "invalid_request"
    assert answer["error"]["message"].startswith(f"{field}:"), answer


def test_metrics_show_the_profile_store(gb_edge):
    shopper = "profile-shopper-5"
    buy_top_offer(gb_edge, shopper)
    hits = metric(gb_edge, 'edgerec_profiles_lookups_total{result="hit"}')
    answer_for(gb_edge, shopper)
    assert metric(gb_edge, 'edgerec_profiles_lookups_total{result="hit"}') == hits + 1
    assert metric(gb_edge, 'edgerec_profiles_lookups_total{result="miss"}') >= 1
    assert metric(gb_edge, "edgerec_profiles_held") >= 1
    assert metric(gb_edge, "edgerec_profiles_budget_bytes") == 256 * 1024 * 1024
    assert metric(gb_edge, 'edgerec_profiles_corrupt_total{what="file"}') == 0


def test_the_raw_shopper_id_reaches_neither_the_store_nor_the_log(module_seeded, gb_edge):
    shopper = "raw-id-" + secrets.token_hex(8)
    buy_top_offer(gb_edge, shopper)
    assert answer_for(gb_edge, shopper)["profile"] == "hit"
    data_dir = Path(gb_edge.args[gb_edge.args.index("--data-dir") + 1])
    files = [p for p in (data_dir / "profiles").rglob("*") if p.is_file()]
    assert files
    for path in [*files, gb_edge.log_path]:
        assert shopper.encode() not in path.read_bytes(), path


def test_profiles_survive_a_restart_and_a_sigkill_of_the_edge(module_seeded):
    edge = module_seeded.start_edge("GB", label="edge-GB-restarts")
    shopper = "profile-shopper-restarts"
    _, bought = buy_top_offer(edge, shopper)
    learned = answer_for(edge, shopper)
    assert learned["profile"] == "hit"
    edge.stop()  # SIGTERM: the store closes cleanly
    edge.start().wait_ready("/readyz")
    assert answer_for(edge, shopper)["offers"] == learned["offers"]
    # A second event, then SIGKILL: the profile was committed before the 202.
    post_event(edge, shopper, "add_to_cart", learned["offers"][0]["offer_id"], learned["request_id"])
    with_cart = answer_for(edge, shopper)
    edge.kill()
    edge.start().wait_ready("/readyz")
    after_kill = answer_for(edge, shopper)
    assert after_kill["profile"] == "hit" and after_kill["offers"] == with_cart["offers"]
    assert bought not in offer_ids(after_kill)
    edge.stop()


def test_a_damaged_store_file_is_refused_and_the_profile_is_rebuilt_from_the_origin(module_seeded):
    edge = module_seeded.start_edge("GB", label="edge-GB-damaged")
    shopper = "profile-shopper-damaged"
    buy_top_offer(edge, shopper)
    assert answer_for(edge, shopper)["profile"] == "hit"
    # The purchase reaches the origin (the spool ships it), which folds it into the shopper's summary.
    wait_until(lambda: metric(edge, "edgerec_events_shipped_total") >= 1, what="the purchase shipped")
    edge.stop()
    store = Path(edge.args[edge.args.index("--data-dir") + 1]) / "profiles" / "profiles.sqlite3"
    for leftover in store.parent.glob("profiles.sqlite3-*"):
        leftover.unlink()
    store.write_bytes(b"this is not a SQLite file " * 100)
    edge.start().wait_ready("/readyz")
    log = edge.log_path.read_text()
    assert "profile store" in log and "refused" in log and "starting empty" in log
    assert metric(edge, 'edgerec_profiles_corrupt_total{what="file"}') == 1
    assert list(store.parent.glob("profiles.sqlite3.corrupt-*"))  # kept aside for inspection
    # Nothing of the shopper is left on this disk: the profile the edge answers with again is the origin's.
    wait_until(lambda: answer_for(edge, shopper)["profile"] == "hit", timeout_s=30, what="the profile from the origin")
    edge.stop()


@pytest.fixture
def redis_prefix():
    down = redis_down()
    if down is not None:
        missing_part(down)
    import redis

    prefix = f"edgerec:test:{secrets.token_hex(6)}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=prefix + "*"):
        client.delete(key)
    client.close()


def test_two_replicas_sharing_redis_see_each_others_events_at_once(module_seeded, redis_prefix):
    # A wait for Redis of 250 ms (5 ms in production): the test machine is shared and loaded.
    args = ["--profile-store", "redis", "--profile-redis-prefix", redis_prefix, "--profile-read-timeout-ms", "250"]
    env = {"EDGEREC_PROFILE_REDIS_URL": REDIS_URL}
    first, second = module_seeded.start_edges(
        module_seeded.edge("GB", args=args, env=env, label="edge-GB-redis-1"),
        module_seeded.edge("GB", args=args, env=env, label="edge-GB-redis-2"),
    )
    shopper = "profile-shopper-redis"
    anonymous = answer_for(second, shopper)
    assert anonymous["profile"] == "miss"
    bought = anonymous["offers"][0]["offer_id"]
    post_event(first, shopper, "purchase", bought, anonymous["request_id"])  # on the other replica
    on_second = answer_for(second, shopper)
    assert on_second["profile"] == "hit" and bought not in offer_ids(on_second)
    assert answer_for(first, shopper)["offers"] == on_second["offers"]
    carted = on_second["offers"][0]["offer_id"]
    post_event(second, shopper, "add_to_cart", carted, on_second["request_id"])
    on_first = answer_for(first, shopper)
    assert carted not in offer_ids(on_first) and on_first["offers"] != on_second["offers"]
    wait_until(lambda: metric(first, 'edgerec_profiles_lookups_total{result="hit"}') >= 2, what="hits on /metrics")
    assert metric(first, 'edgerec_profiles_redis_failures_total{reason="error"}') == 0
    for edge in (first, second):
        edge.stop()


def test_an_edge_whose_redis_is_down_answers_anonymously_and_counts_it(module_seeded):
    from edgerec.cli.process import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    edge = module_seeded.start_edge(
        "GB", args=["--profile-store", "redis"], env={"EDGEREC_PROFILE_REDIS_URL": dead}, label="edge-GB-redis-down"
    )
    shopper = "profile-shopper-redis-down"
    before, _ = buy_top_offer(edge, shopper)  # the event is still accepted (spooled), the profile not stored
    after = answer_for(edge, shopper)
    assert before["profile"] == after["profile"] == "miss" and after["fallback"] is None
    assert metric(edge, 'edgerec_profiles_redis_failures_total{reason="error"}') >= 1
    assert metric(edge, "edgerec_profiles_write_failures_total") >= 1
    edge.stop()
