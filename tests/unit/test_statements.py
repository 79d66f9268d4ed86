"""Answer statements (signed by each region) and the replay guard's rules for re-runs with survivors."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hpf.federation.crypto import masking
from hpf.federation.errors import AuthError, CryptoError, PlanError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.privacy.dp_plan import DpTerms
from hpf.federation.trust import statements
from hpf.federation.trust.statements import Statement
from hpf.node.replay import ReplayGuard

NODES = ("a", "b", "c")
KEYS = {n: Ed25519PrivateKey.generate() for n in NODES}
PUBLIC = {
    n: base64.b64encode(k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode() for n, k in KEYS.items()
}


DP = {  # signed DP terms: integers and fixed decimal strings (epsilon 9 places, delta 18, mu 9), no float
    "mode": "dp",
    "epsilon": "1.000000000",
    "delta": "0.000000010000000000",
    "threshold": 20,
    "components": [[4, 1, "12.345678902"], [0, 1, "0.000000000"]],
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
    dp = {**DP, "components": [[1, 1, "5.000000000"]]}
    with pytest.raises(PlanError) as info:  # (regions derive the run id from their terms too: see test_masking)
        _verify([_signed("a", privacy=dp), _signed("b"), _signed("c")])
    assert info.value.code == "DP_TERMS_DIFFER"


def _body(node: str = "a", privacy: object = DP, runs: object = 1) -> dict[str, object]:
    return {
        "node": node,
        "query_id": "q1",
        "run": "run1",
        "participants": list(NODES),
        "context": "ctx",
        "ciphertexts": "digest-" + node,
        "privacy": privacy,
        "runs": runs,
    }


def _signed_bytes(blob: bytes, node: str = "a") -> pb.AnswerStatement:
    """What a region (or anyone holding its key) signs, byte for byte: its signature is good whatever the form."""
    return pb.AnswerStatement(node_id=node, statement=blob, signature=KEYS[node].sign(statements.DOMAIN + blob))


def _sorted_compact(body: object) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


NOT_CANONICAL = {
    "epsilon a float": {**DP, "epsilon": 1.0},
    "epsilon an integer": {**DP, "epsilon": 1},
    "epsilon with fewer places": {**DP, "epsilon": "1.0"},
    "epsilon with more places": {**DP, "epsilon": "1.0000000000"},
    "epsilon with an exponent": {**DP, "epsilon": "1e0"},
    "delta as Python writes it": {**DP, "delta": "1e-08"},
    "delta a float": {**DP, "delta": 1e-8},
    "delta with epsilon's places": {**DP, "delta": "0.000000010"},
    "a sign": {**DP, "epsilon": "+1.000000000"},
    "a negative": {**DP, "epsilon": "-1.000000000"},
    "a leading zero": {**DP, "epsilon": "01.000000000"},
    "other digits": {**DP, "epsilon": "١.000000000"},
    "a space": {**DP, "epsilon": " 1.000000000"},
    "mu a float": {**DP, "components": [[4, 1, 12.345678902], [0, 1, "0.000000000"]]},
    "mu an integer": {**DP, "components": [[4, 1, 12], [0, 1, "0.000000000"]]},
    "a sensitivity a float": {**DP, "components": [[4.0, 1, "12.345678902"], [0, 1, "0.000000000"]]},
    "a sensitivity a boolean": {**DP, "components": [[True, 1, "12.345678902"], [0, 1, "0.000000000"]]},
    "a component too long": {**DP, "components": [[4, 1, "12.345678902", 0]]},
    "the threshold a float": {**DP, "threshold": 20.0},
    "a field more": {**DP, "noise_sd": "1.000000000"},
    "a field less": {k: v for k, v in DP.items() if k != "delta"},
    "exact with more": {"mode": "exact", "epsilon": "1.000000000"},
    "another mode": {**DP, "mode": "DP"},
    "an epsilon no double holds": {**DP, "epsilon": "1" + "0" * 400 + ".000000000"},
}


@pytest.mark.parametrize("privacy", NOT_CANONICAL.values(), ids=NOT_CANONICAL.keys())
def test_a_statement_whose_terms_are_not_canonical_is_refused(privacy: object) -> None:
    signed = _signed_bytes(_sorted_compact(_body(privacy=privacy)))
    with pytest.raises(CryptoError) as info:
        statements.parse(signed)
    assert info.value.code == "ANSWER_STATEMENT_INVALID"
    with pytest.raises(CryptoError):
        _verify([signed, _signed("b", privacy=DP), _signed("c", privacy=DP)])


@pytest.mark.parametrize(
    "blob",
    [
        _sorted_compact(_body(runs=1.0)),  # a float where an integer belongs
        _sorted_compact(_body()).replace(b'"runs":1', b'"runs":1e0'),
        _sorted_compact(_body()).replace(b'"runs":1', b'"runs":NaN'),
        _sorted_compact(_body()).replace(b'"threshold":20', b'"threshold":2e1'),
        json.dumps(_body(), sort_keys=True).encode(),  # spaces: not the canonical bytes
        _sorted_compact(_body()).replace(b'"runs":1', b'"runs":01'),
    ],
    ids=["runs float", "runs exponent", "runs NaN", "threshold exponent", "spaces", "leading zero"],
)
def test_a_float_or_any_other_form_anywhere_in_the_signed_body_is_refused(blob: bytes) -> None:
    with pytest.raises(CryptoError) as info:
        statements.parse(_signed_bytes(blob))
    assert info.value.code == "ANSWER_STATEMENT_INVALID"


def test_no_party_can_sign_or_bind_a_run_to_a_float() -> None:
    with pytest.raises(ValueError):
        statements.canonical_terms({**DP, "epsilon": 1.0})
    with pytest.raises(ValueError):
        _signed("a", privacy={**DP, "components": [[4, 1, 12.3]]})


def test_canonical_terms_round_trip_exactly() -> None:
    terms = DpTerms.from_canonical({k: v for k, v in DP.items() if k != "mode"})
    assert (terms.epsilon, terms.delta, terms.threshold) == (1.0, 1e-8, 20)
    assert terms.components[0].mu_nano == 12_345_678_902 and terms.components[0].mu == 12.345678902
    assert {"mode": "dp", **terms.canonical()} == DP
    signed = [_signed(n, privacy=DP) for n in NODES]
    out = _verify(signed)
    assert all(s.privacy == DP for s in out)
    assert all(statements.parse(s).encode() == s.statement for s in signed)  # the bytes, exactly
    assert b"1.000000000" in signed[0].statement and b"e-" not in signed[0].statement
    # every region, and the client, bind the same run id to them
    ids = {masking.run_id("q1", list(NODES), statements.canonical_terms(s.privacy)) for s in out}
    assert len(ids) == 1


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
