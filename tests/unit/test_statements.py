"""Answer statements (signed by each region) and the replay guard's rules for re-runs with survivors."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from federation import statements
from federation.errors import AuthError, CryptoError, PlanError
from federation.generated import hpf_federation_pb2 as pb
from federation.statements import Statement
from node.replay import ReplayGuard

NODES = ("a", "b", "c")
KEYS = {n: Ed25519PrivateKey.generate() for n in NODES}
PUBLIC = {
    n: base64.b64encode(k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode() for n, k in KEYS.items()
}


def _signed(node: str, **changes: object) -> pb.AnswerStatement:
    base = Statement(node, "q1", "run1", NODES, "ctx", "digest-" + node, dict(statements.EXACT))
    return statements.sign(dataclasses.replace(base, **changes), KEYS[node].sign)  # type: ignore[arg-type]


def _verify(signed: list[pb.AnswerStatement], answered: tuple[str, ...] = NODES) -> list[Statement]:
    return statements.verify(signed, PUBLIC, query_id="q1", context="ctx", answered=list(answered))


def test_statements_of_one_run_verify() -> None:
    out = _verify([_signed(n) for n in NODES])
    assert [s.node for s in out] == list(NODES) and out[0].privacy == {"mode": "exact"}


def test_a_changed_byte_or_a_foreign_key_is_refused() -> None:
    good = [_signed(n) for n in NODES]
    tampered = pb.AnswerStatement()
    tampered.CopyFrom(good[0])
    tampered.statement = tampered.statement.replace(b'"run":"run1"', b'"run":"run2"')
    with pytest.raises(CryptoError) as info:
        _verify([tampered, *good[1:]])
    assert info.value.code == "ANSWER_STATEMENT_INVALID"
    forged = statements.sign(statements.parse(good[0]), Ed25519PrivateKey.generate().sign)
    with pytest.raises(CryptoError):
        _verify([forged, *good[1:]])


@pytest.mark.parametrize(
    "changes",
    [{"run": "other"}, {"participants": ("a", "b")}, {"context": "another key"}, {"query_id": "q2"}],
    ids=["run", "participants", "context", "query"],
)
def test_statements_must_agree_on_one_run_for_this_question_and_key(changes: dict[str, object]) -> None:
    with pytest.raises(CryptoError) as info:
        _verify([_signed("a", **changes), _signed("b"), _signed("c")])
    assert info.value.code == "ANSWER_STATEMENT_INVALID"


def test_the_sum_must_hold_exactly_the_runs_participants() -> None:
    with pytest.raises(CryptoError):  # the coordinator leaves c's answer out but keeps the run's set
        _verify([_signed("a"), _signed("b")], answered=("a", "b"))


def test_different_privacy_terms_are_refused() -> None:
    dp = {"mode": "dp", "epsilon": 1.0, "delta": 1e-8, "threshold": 0, "components": [[1, 1, 5.0]]}
    with pytest.raises(PlanError) as info:  # (regions derive the run id from their terms too: see test_masking)
        _verify([_signed("a", privacy=dp), _signed("b"), _signed("c")])
    assert info.value.code == "DP_TERMS_DIFFER"


def test_reruns_only_with_fewer_participants_and_at_most_max_runs() -> None:
    guard = ReplayGuard(window_s=60)
    nonce = b"n" * 16
    guard.record(nonce, 0.0, now=1.0, participants=["a", "b", "c", "d"], max_runs=3)
    for again in (["a", "b", "c", "d"], ["a", "b", "c", "d", "e"], ["e"]):  # same, superset, disjoint
        with pytest.raises(AuthError):
            guard.check(nonce, again, max_runs=3)
    with pytest.raises(AuthError):
        guard.check(nonce, None)  # not a run at all: a replay
    guard.record(nonce, 0.0, now=1.0, participants=["a", "b", "c"], max_runs=3)
    guard.record(nonce, 0.0, now=1.0, participants=["a", "b"], max_runs=3)
    with pytest.raises(AuthError):  # a fourth run
        guard.record(nonce, 0.0, now=1.0, participants=["a"], max_runs=3)
    with pytest.raises(AuthError):  # max_runs 1: no re-run at all
        fresh = ReplayGuard(window_s=60)
        fresh.record(b"m" * 16, 0.0, now=1.0, participants=["a", "b"], max_runs=1)
        fresh.record(b"m" * 16, 0.0, now=1.0, participants=["a"], max_runs=1)
