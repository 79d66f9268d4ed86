"""Attacks on ``hpf node refresh``'s request-file protocol (node/lookup_refresh.py)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from hpf.federation.errors import FederationError
from hpf.node import lookup_refresh
from hpf.node.lookup_refresh import FactsRefresher, ask_refresh


class SlowIndex:
    """A lookup index whose computation takes a while (a database with many people), released by the test."""

    supported = True

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()

    def refresh(self, *, force: bool = False) -> int:
        self.started.set()
        self.release.wait(30.0)
        return 7


def test_a_running_node_busy_computing_its_facts_is_reported_as_not_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the node computes its facts (for a scheduled refresh or an earlier request; up to FACTS_SECONDS on
    a large database) its one thread takes no request, so a second ``hpf node refresh`` is told after 5 s that
    no node serves the state directory (NODE_NOT_RUNNING), though one does and would answer it. (The wait for
    a taker is cut here from 5 s to 1 s, and the computation from minutes to 2 s.)"""
    monkeypatch.setattr(lookup_refresh, "TAKE_WAIT_S", 1.0)
    index = SlowIndex()
    refresher = FactsRefresher(index, tmp_path / "lookup-facts", None)  # type: ignore[arg-type]
    said: list[str] = []
    first: list[Any] = []
    try:
        asking = threading.Thread(target=lambda: first.append(ask_refresh(tmp_path, 30.0, said.append)), daemon=True)
        asking.start()
        assert index.started.wait(10.0)
        timer = threading.Timer(2.0, index.release.set)  # the computation ends 2 s on: the second ask can wait
        timer.start()
        try:
            outcome = ask_refresh(tmp_path, 30.0, said.append)
        except FederationError as err:
            pytest.fail(f"a running node was reported as {err.code}: {err.message}")
        assert outcome.ok and outcome.people == 7
    finally:
        index.release.set()
        refresher.stop()


@pytest.mark.parametrize("garbled", [b"not json", b"[]", b'{"ok": "yes", "people": 1}', b'{"ok": true, "x": 1}'])
def test_an_answer_that_is_not_the_nodes_gives_a_clear_code(tmp_path: Path, garbled: bytes) -> None:
    """A result file another writer left in the node's state directory is refused with a code, never a traceback."""
    directory = tmp_path / "lookup-facts"
    directory.mkdir()

    def fake_node() -> None:  # takes the request as the node would, then answers with ``garbled``
        for _ in range(100):
            requests = list(directory.glob("request-*"))
            if requests:
                nonce = requests[0].name.removeprefix("request-")
                requests[0].rename(directory / f"taken-{nonce}")
                (directory / f"result-{nonce}").write_bytes(garbled)
                return
            threading.Event().wait(0.05)

    threading.Thread(target=fake_node, daemon=True).start()
    with pytest.raises(FederationError) as info:
        ask_refresh(tmp_path, 10.0, lambda _msg: None)
    assert info.value.code == "NODE_REFRESH_UNREADABLE"
    assert list(directory.iterdir()) == []  # the asker takes its files back
