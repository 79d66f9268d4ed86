"""Three regions under two consent issuers, where hangzhou accepts only the first: the federation the withholding
and consent attack tests share (tests/integration/test_consent_withholding.py, test_red_team_consent.py).

The bank (an integrator of nanjing) screens under tokens; the coordinator is recorded.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import harness
import pytest
import yaml
from coordinator_recorder import CoordinatorRecorder, recording
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hpf.demo.synth import generate_node
from hpf.federation.consent import revocations as consent_revocations
from hpf.federation.consent import tokens as consent
from hpf.federation.consent.issuer import issue_batch, public_raw
from hpf.federation.hpf_schema import hpf_tables
from hpf.federation.trust import certificates
from hpf.policies import DEFAULT_POLICY

NODES = ["shanghai", "hangzhou", "nanjing"]
PEOPLE = (("bank", "integrator", "nanjing"),)
ISSUER, THIRD = "sh-consent", "third-consent"  # every region accepts ISSUER; hangzhou does not accept THIRD
KEYS = {ISSUER: Ed25519PrivateKey.generate(), THIRD: Ed25519PrivateKey.generate()}
LOANS = ("duplicate_loans", "loan_cities")


def _policy(root: Path, issuers: Sequence[str], breakdown: Sequence[str]) -> Path:
    path = root / f"policy-{len(issuers)}.yaml"
    lookups = {"consent": "token", "consent_issuers": list(issuers), "breakdown": list(breakdown)}
    doc = {
        "version": 1,
        "extends": str(DEFAULT_POLICY),
        "secure_aggregation": {"min_participants": 2},
        "roles": {"integrator": {"lookups": lookups}},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@contextlib.contextmanager
def issuer_federation(
    root: Path, seed: int, breakdown: Sequence[str] = ()
) -> Iterator[tuple[harness.Federation, CoordinatorRecorder]]:
    """The federation, its bank's lookups per city for the purposes in ``breakdown``, and its coordinator's
    recording."""
    for node in NODES:
        generate_node(root / "data", node, 2_000, seed)
    both, one = _policy(root, [ISSUER, THIRD], breakdown), _policy(root, [ISSUER], breakdown)
    issuers = [{"id": i, "key": base64.b64encode(public_raw(k)).decode()} for i, k in KEYS.items()]
    lists = {}  # each issuer's first signed revocation list, nothing revoked: a region takes no consent without it
    for issuer, key in KEYS.items():
        lists[issuer] = root / f"{issuer}-revocations.json"
        consent_revocations.revoke(lists[issuer], key, issuer, [])
    with (
        pytest.MonkeyPatch.context() as patch,
        recording(patch) as recorder,
        harness.federation(
            root,
            hpf_tables(),
            {n: {} for n in NODES},
            write_data=False,
            policy={n: one if n == "hangzhou" else both for n in NODES},
            people=PEOPLE,
            catalog_extra={"issuers": issuers},
            node_settings={n: {"consent_revocations": {i: str(path) for i, path in lists.items()}} for n in NODES},
        ) as fed,
    ):
        yield fed, recorder


def people(fed: harness.Federation, n: int) -> list[str]:
    """``n`` people with an active loan."""
    rows = fed.oracle("SELECT DISTINCT person_id FROM loans WHERE status = 'active' ORDER BY person_id")
    return [r[0] for r in rows[:n]]


def tokens(fed: harness.Federation, ids: Sequence[str], issuer: str, facts: Sequence[str] = LOANS) -> list[str]:
    """The bank's tokens for ``ids`` from ``issuer``, for a loan review, granting ``facts``, for a day."""
    grantee = consent.grantee_of(certificates.load_certificate((fed.pki_dir / "people" / "bank.pem").read_bytes()))
    granted = issue_batch(
        KEYS[issuer],
        issuer,
        ids,
        grantee=grantee,
        purpose="loan-review",
        facts=facts,
        not_after=int(time.time() + 86_400),
    )
    return [consent.token_text(t) for t in granted]
