"""The node's privacy-budget ledger: refusals that spend nothing, durable charges, periods, threads and processes."""

from __future__ import annotations

import datetime as dt
import doctest
import gc
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hpf.federation.errors import ConfigError, PolicyViolation, error_for_code
from hpf.node import privacy_budget
from hpf.node.privacy_budget import LEDGER_FILE, Budget, PrivacyLedger, Spent

ROOT = Path(__file__).resolve().parents[2]
DAY = Budget(epsilon=1.0, delta=1e-5, period="day")
NOW = dt.datetime(2026, 3, 11, 12, 0, tzinfo=dt.UTC).timestamp()  # a Wednesday


def at(text: str) -> float:
    """Unix seconds of a UTC time written like 2026-01-31T23:59:59."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def charge(
    ledger: PrivacyLedger,
    epsilon: float,
    delta: float = 0.0,
    budget: Budget = DAY,
    identity: str = "alice",
    now: float = NOW,
) -> Spent:
    return ledger.charge(
        identity, epsilon, delta, budget, rule="roles.analyst.privacy_budget", party="hangzhou", now=now
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[PrivacyLedger]:
    with PrivacyLedger.open(tmp_path) as opened:
        yield opened


def test_charges_pass_until_the_budget_is_spent_and_a_refusal_spends_nothing(ledger: PrivacyLedger) -> None:
    for n in (1, 2, 3):
        assert charge(ledger, 0.3).queries == n
    with pytest.raises(PolicyViolation) as info:
        charge(ledger, 0.3)
    err = info.value
    assert err.code == "POLICY_PRIVACY_BUDGET"
    assert err.rule == "hangzhou: roles.analyst.privacy_budget"
    assert err.message == (
        "hangzhou: the privacy budget of this identity for today is spent (used 0.9 of 1; a query costs 0.3); "
        "it renews on 2026-03-12"
    )
    assert err.hint == "wait until 2026-03-12 (UTC), or ask the node's operator for a larger budget"
    assert ledger.spent("alice", DAY, now=NOW) == Spent(0.9, 0.0, "2026-03-11", "2026-03-12", 3)
    assert charge(ledger, 0.1).epsilon == 1.0  # exactly the remainder: 0.3 * 3 + 0.1 is not above 1.0
    with pytest.raises(PolicyViolation):
        charge(ledger, 1e-6)
    assert charge(ledger, 0.0).queries == 5  # a query that costs nothing still passes, and is counted


def test_ten_charges_of_a_tenth_do_not_drift(ledger: PrivacyLedger) -> None:
    for _ in range(10):
        charge(ledger, 0.1, 1e-6)
    spent = ledger.spent("alice", DAY, now=NOW)
    assert (spent.epsilon, spent.delta, spent.queries) == (1.0, 1e-5, 10)


def test_delta_is_a_budget_too(ledger: PrivacyLedger) -> None:
    for _ in range(4):
        charge(ledger, 0.01, 2.5e-6)
    with pytest.raises(PolicyViolation) as info:
        charge(ledger, 0.01, 1e-7)
    assert info.value.code == "POLICY_PRIVACY_BUDGET"
    assert "privacy budget (delta)" in info.value.message
    assert "used 1e-05 of 1e-05; a query costs 1e-07" in info.value.message
    spent = ledger.spent("alice", DAY, now=NOW)
    assert (spent.epsilon, spent.delta, spent.queries) == (0.04, 1e-5, 4)
    assert charge(ledger, 0.01, 0.0).queries == 5  # a pure-epsilon query still fits


def test_a_budget_without_delta_refuses_any_delta(ledger: PrivacyLedger) -> None:
    pure = Budget(epsilon=1.0, delta=0.0, period="day")
    charge(ledger, 0.5, 0.0, pure)
    with pytest.raises(PolicyViolation):
        charge(ledger, 0.1, 1e-9, pure)


def test_a_query_dearer_than_the_whole_budget_says_so(ledger: PrivacyLedger) -> None:
    with pytest.raises(PolicyViolation) as info:
        charge(ledger, 2.0)
    assert info.value.hint is not None and "more than the whole budget for a day" in info.value.hint
    assert ledger.spent("alice", DAY, now=NOW).queries == 0


def test_the_refusal_never_names_the_identity(ledger: PrivacyLedger) -> None:
    identity = "li.na-310101"
    budget = Budget(epsilon=0.5, delta=1e-6, period="week")
    charge(ledger, 0.5, identity=identity, budget=budget)
    for eps, delta in ((0.1, 0.0), (0.0, 1e-5)):
        with pytest.raises(PolicyViolation) as info:
            charge(ledger, eps, delta, identity=identity, budget=budget)
        for text in (str(info.value), info.value.message, info.value.hint or "", info.value.rule or ""):
            assert identity not in text and "li.na" not in text


def test_identities_have_separate_budgets(ledger: PrivacyLedger) -> None:
    for _ in range(10):
        charge(ledger, 0.1, identity="alice")
    with pytest.raises(PolicyViolation):
        charge(ledger, 0.1, identity="alice")
    assert ledger.spent("bob", DAY, now=NOW) == Spent(0.0, 0.0, "2026-03-11", "2026-03-12", 0)
    assert charge(ledger, 1.0, identity="bob").epsilon == 1.0
    assert ledger.spent("alice", DAY, now=NOW).queries == 10


def test_charges_survive_close_and_reopen(tmp_path: Path) -> None:
    with PrivacyLedger.open(tmp_path) as ledger:
        charge(ledger, 0.7, 3e-6)
    with PrivacyLedger.open(tmp_path) as ledger:
        assert ledger.spent("alice", DAY, now=NOW) == Spent(0.7, 3e-6, "2026-03-11", "2026-03-12", 1)
        charge(ledger, 0.3)
        with pytest.raises(PolicyViolation):
            charge(ledger, 0.1)
    with PrivacyLedger.open(tmp_path) as ledger:
        with pytest.raises(PolicyViolation):
            charge(ledger, 0.1)  # the refusal holds after a restart too
        assert ledger.spent("alice", DAY, now=NOW).epsilon == 1.0


def test_a_ledger_dropped_without_close_keeps_its_charges(tmp_path: Path) -> None:
    first = PrivacyLedger.open(tmp_path)
    charge(first, 0.4)
    second = PrivacyLedger.open(tmp_path)  # while the first is still open, as another process would
    assert second.spent("alice", DAY, now=NOW).epsilon == 0.4
    del first
    gc.collect()
    assert second.spent("alice", DAY, now=NOW).epsilon == 0.4
    second.close()


def test_a_process_killed_right_after_a_charge_keeps_it(tmp_path: Path) -> None:
    script = f"""
        import os
        from pathlib import Path
        from hpf.node.privacy_budget import Budget, PrivacyLedger
        ledger = PrivacyLedger.open(Path({str(tmp_path)!r}))
        ledger.charge("alice", 0.25, 0.0, Budget(1.0, 0.0, "day"), rule="r", party="hangzhou", now={NOW})
        os._exit(0)  # no close, no checkpoint, no cleanup
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, check=True, timeout=60)
    with PrivacyLedger.open(tmp_path) as ledger:
        assert ledger.spent("alice", Budget(1.0, 0.0, "day"), now=NOW).epsilon == 0.25


@pytest.mark.parametrize(
    ("period", "last", "first", "start", "end"),
    [
        ("day", "2026-03-11T23:59:59", "2026-03-12T00:00:00", "2026-03-11", "2026-03-12"),
        ("week", "2026-03-15T23:59:59", "2026-03-16T00:00:00", "2026-03-09", "2026-03-16"),  # Sunday, Monday
        ("month", "2026-01-31T23:59:59", "2026-02-01T00:00:00", "2026-01-01", "2026-02-01"),
        ("month", "2026-12-31T23:59:59", "2027-01-01T00:00:00", "2026-12-01", "2027-01-01"),
        ("month", "2028-02-29T23:59:59", "2028-03-01T00:00:00", "2028-02-01", "2028-03-01"),
        ("year", "2026-12-31T23:59:59", "2027-01-01T00:00:00", "2026-01-01", "2027-01-01"),
    ],
)
def test_the_budget_renews_when_the_utc_period_turns(
    ledger: PrivacyLedger, period: privacy_budget.Period, last: str, first: str, start: str, end: str
) -> None:
    budget = Budget(epsilon=1.0, delta=1e-5, period=period)
    spent = charge(ledger, 1.0, budget=budget, now=at(last))
    assert (spent.period_start, spent.period_end) == (start, end)
    with pytest.raises(PolicyViolation) as info:
        charge(ledger, 0.5, budget=budget, now=at(last))
    assert info.value.message.endswith(f"it renews on {end}")
    renewed = charge(ledger, 0.5, budget=budget, now=at(first))
    assert (renewed.epsilon, renewed.queries, renewed.period_start) == (0.5, 1, end)
    assert ledger.spent("alice", budget, now=at(last)).epsilon == 1.0  # the past period is kept


def test_periods_of_different_kinds_are_counted_apart(ledger: PrivacyLedger) -> None:
    week = Budget(epsilon=1.0, delta=1e-5, period="week")
    charge(ledger, 1.0, budget=DAY)
    assert charge(ledger, 1.0, budget=week).epsilon == 1.0


def test_a_refund_gives_back_but_never_below_zero(ledger: PrivacyLedger) -> None:
    charge(ledger, 0.6, 4e-6)
    charge(ledger, 0.3, 2e-6)
    ledger.refund("alice", 0.3, 2e-6, DAY, now=NOW)
    assert ledger.spent("alice", DAY, now=NOW) == Spent(0.6, 4e-6, "2026-03-11", "2026-03-12", 1)
    ledger.refund("alice", 5.0, 1e-3, DAY, now=NOW)
    ledger.refund("alice", 5.0, 1e-3, DAY, now=NOW)
    assert ledger.spent("alice", DAY, now=NOW) == Spent(0.0, 0.0, "2026-03-11", "2026-03-12", 0)
    ledger.refund("carol", 1.0, 0.0, DAY, now=NOW)  # nothing spent: nothing to give back, no row made
    assert ledger.spent("carol", DAY, now=NOW).queries == 0
    assert charge(ledger, 1.0).epsilon == 1.0


def test_a_refund_goes_back_to_the_period_of_its_charge(ledger: PrivacyLedger) -> None:
    before = at("2026-03-11T23:59:59")
    charge(ledger, 1.0, now=before)
    ledger.refund("alice", 1.0, 0.0, DAY, now=before)
    assert ledger.spent("alice", DAY, now=before).epsilon == 0.0


def test_threads_cannot_overspend(ledger: PrivacyLedger) -> None:
    passed: list[int] = []
    refused: list[int] = []
    start = threading.Barrier(8)

    def spend() -> None:
        start.wait()
        for _ in range(50):
            try:
                charge(ledger, 0.01)
            except PolicyViolation:
                refused.append(1)
            else:
                passed.append(1)

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(passed), len(refused)) == (100, 300)
    assert ledger.spent("alice", DAY, now=NOW) == Spent(1.0, 0.0, "2026-03-11", "2026-03-12", 100)


def test_processes_cannot_overspend(tmp_path: Path) -> None:
    """Four processes on one directory, started together (each opens the ledger, says ready, waits for go)."""
    script = f"""
        import sys
        from pathlib import Path
        from hpf.federation.errors import PolicyViolation
        from hpf.node.privacy_budget import Budget, PrivacyLedger
        passed = 0
        with PrivacyLedger.open(Path({str(tmp_path)!r})) as ledger:
            print("ready", flush=True)
            sys.stdin.readline()
            for _ in range(60):
                try:
                    ledger.charge("alice", 0.01, 0.0, Budget(1.0, 0.0, "day"), rule="r", party="p", now={NOW})
                    passed += 1
                except PolicyViolation:
                    pass
        print(passed)
    """
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for run in runs:
        assert run.stdout is not None and run.stdout.readline() == "ready\n"
    for run in runs:
        assert run.stdin is not None
        run.stdin.write("go\n")
        run.stdin.flush()
    outputs = [run.communicate(timeout=60)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0, 0]
    assert sum(int(out) for out in outputs) == 100
    with PrivacyLedger.open(tmp_path) as ledger:
        assert ledger.spent("alice", Budget(1.0, 0.0, "day"), now=NOW).queries == 100


def test_a_ledger_busy_too_long_refuses_the_query_and_spends_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(privacy_budget, "BUSY_TIMEOUT_S", 0.05)
    with PrivacyLedger.open(tmp_path) as ledger:
        other = sqlite3.connect(tmp_path / LEDGER_FILE, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process in the middle of a charge that does not end
        with pytest.raises(ConfigError) as info:
            charge(ledger, 0.1)
        assert info.value.code == "CONFIG_BUDGET_LEDGER_UNAVAILABLE"
        assert "locked" not in info.value.message  # SQLite's words go to the log, not over the wire
        other.execute("ROLLBACK")
        other.close()
        assert ledger.spent("alice", DAY, now=NOW).queries == 0
        assert charge(ledger, 0.1).queries == 1


def test_the_ledger_file_is_private(tmp_path: Path) -> None:
    with PrivacyLedger.open(tmp_path / "state") as ledger:
        charge(ledger, 0.1)
        assert stat.S_IMODE((tmp_path / "state" / LEDGER_FILE).stat().st_mode) == 0o600
        for side in ("-wal", "-shm"):
            sidecar = tmp_path / "state" / (LEDGER_FILE + side)
            assert not sidecar.exists() or stat.S_IMODE(sidecar.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "content",
    [b"not a database", os.urandom(8192), b"SQLite format 3\x00" + b"\xff" * 4080],
    ids=["text", "random", "bad-header"],
)
def test_a_garbage_ledger_is_refused_clearly_and_left_alone(tmp_path: Path, content: bytes) -> None:
    (tmp_path / LEDGER_FILE).write_bytes(content)
    with pytest.raises(ConfigError) as info:
        PrivacyLedger.open(tmp_path)
    assert info.value.code == "CONFIG_BUDGET_LEDGER_UNREADABLE"
    assert "cannot be used" in info.value.message and info.value.__suppress_context__
    assert (tmp_path / LEDGER_FILE).read_bytes() == content
    assert type(error_for_code(info.value.code, "m")) is ConfigError


def test_a_damaged_ledger_is_refused(tmp_path: Path) -> None:
    with PrivacyLedger.open(tmp_path) as ledger:
        for i in range(200):
            charge(ledger, 0.1, identity=f"user-{i:04d}")
    path = tmp_path / LEDGER_FILE
    data = bytearray(path.read_bytes())
    assert len(data) >= 3 * 4096
    data[2 * 4096 + 100 : 2 * 4096 + 400] = b"\x07" * 300  # inside the third page, a page of the table
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as info:
        PrivacyLedger.open(tmp_path)
    assert info.value.code == "CONFIG_BUDGET_LEDGER_UNREADABLE"


def test_another_applications_database_is_refused(tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / LEDGER_FILE)
    other.execute("CREATE TABLE notes (text TEXT)")
    other.commit()
    other.close()
    with pytest.raises(ConfigError, match="another application's"):
        PrivacyLedger.open(tmp_path)


def test_a_closed_ledger_is_not_used_by_mistake(tmp_path: Path) -> None:
    ledger = PrivacyLedger.open(tmp_path)
    ledger.close()
    ledger.close()
    with pytest.raises(RuntimeError):
        charge(ledger, 0.1)


@pytest.mark.parametrize(
    ("epsilon", "delta", "period"),
    [(0.0, 0.0, "day"), (-1.0, 0.0, "day"), (float("nan"), 0.0, "day"), (1.0, 1.0, "day"), (1.0, 0.0, "hour")],
)
def test_a_budget_must_make_sense(epsilon: float, delta: float, period: str) -> None:
    with pytest.raises(ConfigError):
        Budget(epsilon, delta, period)  # type: ignore[arg-type]


@pytest.mark.parametrize(("epsilon", "delta"), [(-0.1, 0.0), (0.1, -1e-6), (float("inf"), 0.0)])
def test_a_cost_must_make_sense(ledger: PrivacyLedger, epsilon: float, delta: float) -> None:
    with pytest.raises(ValueError):
        charge(ledger, epsilon, delta)


def test_docstring_examples() -> None:
    result = doctest.testmod(privacy_budget)
    assert result.attempted > 0 and result.failed == 0


def test_every_period_overlapping_a_restore_gap_counts_as_spent_by_everyone(tmp_path: Path) -> None:
    """A node restored from a backup charges every identity in full for the periods its gap overlaps (a week
    overlapping a gap of two days in it), seen before or not; the next day and the next week are charged as usual."""
    with PrivacyLedger.open(tmp_path) as ledger:
        charge(ledger, 0.25, now=at("2026-03-09T10:00:00"))
        ledger.add_gap(at("2026-03-10T23:00:00"), at("2026-03-11T09:00:00"), checkpoint=42)
        ledger.add_gap(at("2026-03-10T23:00:00"), at("2026-03-11T09:00:00"), checkpoint=42)  # once only
        assert ledger.gaps() == [(at("2026-03-10T23:00:00"), at("2026-03-11T09:00:00"), 42)]
        week = Budget(epsilon=1.0, delta=1e-5, period="week")
        for day in ("2026-03-10T23:30:00", "2026-03-11T12:00:00"):
            for who in ("alice", "never-seen"):
                err = refused(lambda who=who, day=day: charge(ledger, 0.1, identity=who, now=at(day)))
                assert err.code == "POLICY_PRIVACY_BUDGET" and "restored from a backup (checkpoint 42)" in err.message
                assert who not in err.message
            assert ledger.spent("never-seen", DAY, now=at(day)).epsilon == DAY.epsilon
        assert refused(lambda: charge(ledger, 0.1, budget=week, now=at("2026-03-13T12:00:00")))
        assert charge(ledger, 0.5, now=at("2026-03-09T12:00:00")).epsilon == 0.75  # before the gap: as usual
        assert charge(ledger, 0.5, now=at("2026-03-12T00:00:00")).epsilon == 0.5  # the day after
        assert charge(ledger, 0.5, budget=week, now=at("2026-03-16T00:00:00")).epsilon == 0.5  # the week after
    with sqlite3.connect(tmp_path / LEDGER_FILE) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2  # an older node refuses this ledger
    with PrivacyLedger.open(tmp_path) as again:
        assert again.gaps() == [(at("2026-03-10T23:00:00"), at("2026-03-11T09:00:00"), 42)]


def refused(call: Callable[[], object]) -> PolicyViolation:
    with pytest.raises(PolicyViolation) as info:
        call()
    return info.value
