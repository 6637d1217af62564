"""Profile store backends for one parametrized suite: the embedded store on a temporary directory, and the Redis
store on the real server at 127.0.0.1:6379 under a key prefix of its own per test (removed afterwards)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import missing_part
from tests.edge_node.profiles.profile_backends import Backend, redis_down


@pytest.fixture(params=["embedded", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "redis":
        down = redis_down()
        if down is not None:
            missing_part(down)
    b = Backend(request.param, tmp_path)
    try:
        yield b
    finally:
        b.close_all()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Backend]:
    b = Backend("embedded", tmp_path)
    try:
        yield b
    finally:
        b.close_all()
