"""Consent tokens at screening scale: issuing a batch, token sizes, and a region's checks per applicant.

    python bench/consent_bench.py --people 100000

Issues one batch of ``--people`` grants (one signed Merkle root), then checks every token as a region does for
a screening (parse from binary, the inclusion path, the cached root signature, terms, expiry, revocation
against a list of ``--revoked`` grants, the commitment against the identifier), and prints JSON: the batch's
issue time, token sizes (binary and base64url text, min and max), the checks' time per applicant (median of
``--runs``), the signature checks made (one per batch), and the same check without the root cache (one
Ed25519 verification per applicant, what a signature per grant would cost). Every honest token must pass and a
token checked against another person must fail.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hpf.federation.consent import tokens as consent
from hpf.federation.consent.issuer import issue_batch, public_raw
from hpf.federation.consent.verifier import ConsentVerifier
from hpf.federation.person_id import person_id_array


class _Listed:
    def __init__(self, revoked: frozenset[bytes]) -> None:
        self._revoked = revoked

    def revoked(self, grant_id: bytes) -> bool | None:
        return grant_id in self._revoked


class _Counted:
    def __init__(self, key: object) -> None:
        self.key, self.calls = key, 0

    def verify(self, signature: bytes, data: bytes) -> None:
        self.calls += 1
        self.key.verify(signature, data)  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--revoked", type=int, default=10_000)
    parser.add_argument("--uncached-sample", type=int, default=2_000)
    args = parser.parse_args()
    n = max(1, min(args.people, consent.MAX_BATCH))
    people = list(person_id_array([310101] * n, [19800101 + (i % 28) for i in range(n)], [i % 1000 for i in range(n)]))
    key, bank = Ed25519PrivateKey.generate(), bytes(range(32))
    started = time.perf_counter()
    tokens = issue_batch(
        key, "sh-consent", people, grantee=bank, purpose="loan-review", facts=["duplicate_loans"], not_after=2**40
    )
    issue_s = time.perf_counter() - started
    raw = [t.encode() for t in tokens]
    text = [consent.token_text(t) for t in tokens]
    revoked = _Listed(frozenset(bytes([i % 256, i // 256]) * 8 for i in range(args.revoked)))
    ask = {"grantee": bank, "purpose": "loan-review", "facts": ["duplicate_loans"]}
    per_run, calls = [], 0
    for _ in range(max(1, args.runs)):
        verifier = ConsentVerifier({"sh-consent": public_raw(key)}, {"sh-consent": revoked})
        counted = _Counted(verifier._keys["sh-consent"])
        verifier._keys["sh-consent"] = counted  # type: ignore[assignment]
        started = time.perf_counter()
        verdicts = [verifier.check(r, p, **ask) for r, p in zip(raw, people, strict=True)]  # type: ignore[arg-type]
        per_run.append((time.perf_counter() - started) / n)
        assert verdicts == [None] * n
        calls = counted.calls
    assert verifier.check(raw[0], people[-1], **ask) == "CONSENT_PERSON_MISMATCH"  # type: ignore[arg-type]
    sample = min(args.uncached_sample, n)
    started = time.perf_counter()
    for r, p in zip(raw[:sample], people[:sample], strict=True):
        cold = ConsentVerifier({"sh-consent": public_raw(key)}, cache_size=1)
        assert cold.check(r, p, **ask) is None  # type: ignore[arg-type]
    uncached = (time.perf_counter() - started) / sample
    per_applicant = statistics.median(per_run)
    print(
        json.dumps(
            {
                "people": n,
                "issue_s": round(issue_s, 2),
                "token_bytes": {"min": min(map(len, raw)), "max": max(map(len, raw)), "bound": consent.MAX_TOKEN_BYTES},
                "token_text_chars": {"min": min(map(len, text)), "max": max(map(len, text))},
                "check_us_per_applicant": round(per_applicant * 1e6, 1),
                "check_s_for_all": round(per_applicant * n, 2),
                "signature_checks": calls,
                "check_us_per_applicant_with_a_signature_each": round(uncached * 1e6, 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
