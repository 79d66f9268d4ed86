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
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from cli.demo_federation import DemoLayout, ensure_data, layout_for, running_parties, write_configs
from federation.client import FederationClient, QueryAnswer
from federation.profile import load_profile

QUERY = (
    "SELECT EXTRACT(YEAR FROM month) AS year, COUNT(*) AS n, SUM(amount_fen) AS total_fen "
    "FROM deposits GROUP BY year ORDER BY year"
)
DEADLINE_MS = 2_000
WAIT_S = 30.0  # the most any loop below waits for the coordinator to learn a region's health


def _short_deadline(layout: DemoLayout) -> None:
    config = yaml.safe_load(layout.coordinator_config.read_text(encoding="utf-8"))
    config.update(deadline_ms=DEADLINE_MS, min_deadline_ms=DEADLINE_MS)
    layout.coordinator_config.write_text(yaml.safe_dump(config), encoding="utf-8")


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoLayout]:
    layout = layout_for(tmp_path_factory.mktemp("stall") / "fed", 4)
    ensure_data(layout, 300, 3, lambda _msg: None)
    write_configs(layout, 0)
    _short_deadline(layout)
    yield layout


def _missing(answer: QueryAnswer) -> list[tuple[str, str]]:
    return [(m["node_id"], m["code"]) for m in answer.missing]


def test_a_stopped_region_is_left_out_until_its_health_returns(layout: DemoLayout) -> None:
    with running_parties(layout, lambda _msg: None) as parties:
        stalled = layout.node_ids[-1]
        process = next(p.process for p in parties if p.name == stalled)
        others = [n for n in layout.node_ids if n != stalled]
        with FederationClient(load_profile(layout.client_profile)) as client:
            healthy = client.query(QUERY)
            assert healthy.answered == layout.node_ids and not healthy.missing
            os.kill(process.pid, signal.SIGSTOP)
            try:
                first = client.query(QUERY)  # it was not known unwell when this question was admitted
                assert first.answered == others and _missing(first) == [(stalled, "NODE_TIMEOUT")]

                ends = time.monotonic() + WAIT_S
                later = client.query(QUERY)
                while _missing(later) != [(stalled, "NODE_UNWELL")] and time.monotonic() < ends:
                    time.sleep(0.2)
                    later = client.query(QUERY)
                assert _missing(later) == [(stalled, "NODE_UNWELL")] and later.answered == others
                assert later.rows and later.timings["fanout_ms"] < DEADLINE_MS  # no one waited on the stalled region

                def ask(_: int) -> QueryAnswer:
                    return client.query(QUERY)

                with ThreadPoolExecutor(max_workers=8) as pool:  # many at once: none of them waits on it
                    answers = list(pool.map(ask, range(8)))
                assert all(_missing(a) == [(stalled, "NODE_UNWELL")] and a.rows == later.rows for a in answers)
                assert all(a.timings["fanout_ms"] < DEADLINE_MS for a in answers)
                _, explained = client.explain(QUERY)  # an explain is not sent to it either
                assert [(v.node_id, v.accepted, v.code) for v in explained.verdicts] == [
                    *((n, True, "") for n in others),
                    (stalled, False, "NODE_UNWELL"),
                ]
            finally:
                os.kill(process.pid, signal.SIGCONT)

            ends = time.monotonic() + WAIT_S
            back = client.query(QUERY)
            while back.missing and time.monotonic() < ends:
                time.sleep(0.2)
                back = client.query(QUERY)
            assert back.answered == layout.node_ids and not back.missing
            assert back.rows == healthy.rows
