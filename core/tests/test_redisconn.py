"""The server identity on every connection: learned in the same round trip as the commands."""

from __future__ import annotations

import re
from typing import Any

import pytest

from core import hotstate, redisconn


@pytest.mark.parametrize("unstamped_first", [True, False])
def test_a_probe_in_a_pipeline_is_read_ahead_of_every_answer(monkeypatch, redis_namespace: Any, unstamped_first):
    """A probe due in a pipeline goes ahead of the whole batch: sent ahead of a later command, its
    answers were read as an earlier command's (the benchmarks' seeding met it: awards 'suspect')."""
    monkeypatch.setattr(redisconn, "REFRESH_SECONDS", 0.0)  # every stamped command brings a probe
    client = hotstate.connection()
    key = f"{redis_namespace}:probe"
    client.set(key, "first")
    for _ in range(3):
        pipe = client.pipeline(transaction=False)
        if unstamped_first:
            pipe.get(key)
        pipe.echo(redisconn.IDENTITY)
        pipe.get(key)
        pipe.echo(redisconn.IDENTITY)
        answers = pipe.execute()
        if unstamped_first:
            assert answers.pop(0) == b"first"
        first, value, second = answers
        assert value == b"first"
        assert re.fullmatch(rb"[0-9a-f]{16}", first) and second == first
    # A single stamped command with its probe ahead of it.
    assert re.fullmatch(rb"[0-9a-f]{16}", client.echo(redisconn.IDENTITY))
    assert client.get(key) == b"first"
