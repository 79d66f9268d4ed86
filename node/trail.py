"""What a node's audit entry says about one request, filled in as the request's checks pass."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass
class Trail:
    """What the audit entry says about one request; filled in as the checks pass."""

    operation: str
    via: str = ""
    identity: str = ""
    role: str = ""
    purpose: str = ""
    consent: bool = False
    query: str = ""
    nonce: str = ""
    ciphertext: str = ""
    subjects: str | None = None  # lookups: keyed hashes of the identifiers (subject_tags.subject_tag), space-separated
    consents: str | None = None  # lookups with tokens: keyed hashes of each one's grant (subject_tags.consent_tags)
    participants: str | None = None  # the run's participant set, comma-separated (masks cancel over exactly it)
    privacy: str | None = None  # "exact", or "dp epsilon=E delta=D" charged (fixed decimals, as signed)

    def entry(self, node_id: str, decision: str, code: str, rule: str) -> dict[str, str | int | bool | None]:
        now = dt.datetime.now(dt.UTC)
        entry: dict[str, str | int | bool | None] = {
            "time": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
            "node": node_id,
            "via": self.via,
            "identity": self.identity,
            "role": self.role,
            "purpose": self.purpose,
            "consent": self.consent,
            "operation": self.operation,
            "query": self.query,
            "nonce": self.nonce,
            "decision": decision,
            "code": code,
            "rule": rule,
            "ciphertext": self.ciphertext,
        }
        for name, value in (
            ("subjects", self.subjects),
            ("consents", self.consents),
            ("participants", self.participants),
            ("privacy", self.privacy),
        ):
            if value is not None:
                entry[name] = value
        return entry
