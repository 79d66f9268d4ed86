"""A region whose process is stopped (SIGSTOP), against real processes: questions are answered without it.

The first question that finds it stalled waits out its deadline (the region is named NODE_TIMEOUT); from then on,
while its health checks fail, later questions are admitted without it (named NODE_UNWELL) and wait on no one;
once it runs again and its health returns, it is back in the answers.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import pytest
import yaml

from hpf.client.answers import QueryAnswer
from hpf.client.federation_client import FederationClient
from hpf.client.profile import load_profile
from hpf.demo.launcher import (
    DemoLayout,
    ensure_data,
    layout_for,
    running_parties,
    use_policy_extending_default,
    write_configs,
)

QUERY = (
    "SELECT EXTRACT(YEAR FROM month) AS year, COUNT(*) AS n, SUM(amount_fen) AS total_fen "
    "FROM deposits GROUP BY year ORDER BY year"
)
# asked by the operator, whose answers are exact (the default policy's one exact role), for its purpose operations:
# a region left out shows in the answer's regions, and the rows stay equal to the healthy answer's
OPERATOR, PURPOSE = "operator", "operations"
DEADLINE_MS = 2_000
WAIT_S = 30.0  # the most any loop below waits for the coordinator to learn a region's health


def _coordinator(layout: DemoLayout, **settings: int) -> None:
    config = yaml.safe_load(layout.coordinator_config.read_text(encoding="utf-8"))
    config.update(settings)
    layout.coordinator_config.write_text(yaml.safe_dump(config), encoding="utf-8")


def _federation(directory: Path, nodes: int) -> DemoLayout:
    layout = layout_for(directory / "fed", nodes)
    ensure_data(layout, 300, 3, lambda _msg: None)
    write_configs(layout, 0)
    use_policy_extending_default(  # a test policy: the default's, with room for the many questions asked here
        layout,
        "stall-test.yaml",
        "test policy: the default with the operator's rate limit at the caseworker's, 120 a minute",
        {OPERATOR: {"rate_limit": {"requests": 120, "per_seconds": 60}}},
    )
    return layout


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoLayout]:
    layout = _federation(tmp_path_factory.mktemp("stall"), 4)
    _coordinator(layout, deadline_ms=DEADLINE_MS, min_deadline_ms=DEADLINE_MS)
    yield layout


def _missing(answer: QueryAnswer) -> list[tuple[str, str]]:
    return [(m["node_id"], m["code"]) for m in answer.missing]


def test_a_stopped_region_is_left_out_until_its_health_returns(layout: DemoLayout) -> None:
    with running_parties(layout, lambda _msg: None) as parties:
        stalled = layout.node_ids[-1]
        process = next(p.process for p in parties if p.name == stalled)
        others = [n for n in layout.node_ids if n != stalled]
        with FederationClient(load_profile(layout.profile_of(OPERATOR))) as client:
            healthy = client.query(QUERY, purpose=PURPOSE)
            assert healthy.answered == layout.node_ids and not healthy.missing
            os.kill(process.pid, signal.SIGSTOP)
            try:
                first = client.query(QUERY, purpose=PURPOSE)  # it was not known unwell when this question was admitted
                assert first.answered == others and _missing(first) == [(stalled, "NODE_TIMEOUT")]

                ends = time.monotonic() + WAIT_S
                later = client.query(QUERY, purpose=PURPOSE)
                while _missing(later) != [(stalled, "NODE_UNWELL")] and time.monotonic() < ends:
                    time.sleep(0.2)
                    later = client.query(QUERY, purpose=PURPOSE)
                assert _missing(later) == [(stalled, "NODE_UNWELL")] and later.answered == others
                assert later.rows and later.timings["fanout_ms"] < DEADLINE_MS  # no one waited on the stalled region

                def ask(_: int) -> QueryAnswer:
                    return client.query(QUERY, purpose=PURPOSE)

                with ThreadPoolExecutor(max_workers=8) as pool:  # many at once: none of them waits on it
                    answers = list(pool.map(ask, range(8)))
                assert all(_missing(a) == [(stalled, "NODE_UNWELL")] and a.rows == later.rows for a in answers)
                assert all(a.timings["fanout_ms"] < DEADLINE_MS for a in answers)
                _, explained = client.explain(QUERY, purpose=PURPOSE)  # an explain is not sent to it either
                assert [(v.node_id, v.accepted, v.code) for v in explained.verdicts] == [
                    *((n, True, "") for n in others),
                    (stalled, False, "NODE_UNWELL"),
                ]
            finally:
                os.kill(process.pid, signal.SIGCONT)

            ends = time.monotonic() + WAIT_S
            back = client.query(QUERY, purpose=PURPOSE)
            while back.missing and time.monotonic() < ends:
                time.sleep(0.2)
                back = client.query(QUERY, purpose=PURPOSE)
            assert back.answered == layout.node_ids and not back.missing
            assert back.rows == healthy.rows


def test_questions_waiting_on_a_stopped_region_hold_no_worker(tmp_path: Path) -> None:
    """The coordinator has one worker thread. Questions sent as a region stops all wait for it, a deadline each,
    and meanwhile the coordinator answers at once what needs no region (its catalog): waiting holds no worker.
    With the questions on the worker, the catalog would wait behind them all, and they behind each other."""
    layout = _federation(tmp_path, 4)  # three answer: as many as secure aggregation needs
    deadline_ms, questions = 6_000, 6
    _coordinator(layout, deadline_ms=deadline_ms, min_deadline_ms=deadline_ms, max_workers=1)
    profile = yaml.safe_load(layout.client_profile.read_text(encoding="utf-8"))
    profile.pop("catalog", None)  # the catalog is then asked of the coordinator
    asks_catalog = layout.data / "client-asks-catalog.yaml"  # beside the profile: its paths are relative
    asks_catalog.write_text(yaml.safe_dump(profile), encoding="utf-8")
    with running_parties(layout, lambda _msg: None) as parties:
        stalled = layout.node_ids[-1]
        process = next(p.process for p in parties if p.name == stalled)
        with FederationClient(load_profile(layout.profile_of(OPERATOR))) as client:
            assert not client.query(
                QUERY, purpose=PURPOSE
            ).missing  # every region answers, and the client holds the plan
            os.kill(process.pid, signal.SIGSTOP)
            try:
                with ThreadPoolExecutor(max_workers=questions) as pool:
                    sent = time.monotonic()
                    waiting = [pool.submit(client.query, QUERY, purpose=PURPOSE) for _ in range(questions)]
                    time.sleep(1.0)  # every question reached the coordinator, and waits for the stalled region
                    with FederationClient(load_profile(asks_catalog)) as other:
                        catalog = other.catalog
                    pending = [not q.done() for q in waiting]
                    done, _ = wait(waiting, timeout=5 * deadline_ms / 1000)
                    finished = time.monotonic()
            finally:
                os.kill(process.pid, signal.SIGCONT)
    assert catalog.node_ids == layout.node_ids
    assert all(pending), "the catalog was answered only after questions waiting on the stalled region"
    assert len(done) == questions
    answers = [q.result() for q in waiting]
    assert all(_missing(a) == [(stalled, "NODE_TIMEOUT")] for a in answers)
    # side by side, each one deadline (queued on one worker they would take six); the bound is loose on purpose
    assert finished - sent < 3 * deadline_ms / 1000
