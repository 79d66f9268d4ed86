"""A client profile (``client.yaml``): everything a caseworker's CLI or an integrator needs::

coordinator: 127.0.0.1:50050
catalog: federation.yaml                # or omit: fetched from the coordinator
keys: keys/client.bfv                   # the BFV key pair (secret inside, mode 0600; made on first use)
tls: {ca: pki/ca.pem, cert: pki/people/caseworker.pem, key: pki/people/caseworker.key}
# insecure: true                        # plaintext, local development only
# identity: {cert: ..., key: ...}       # the certificate that signs questions (default: the TLS one)
# purpose: loan-review                  # purpose code sent when the command line gives none
# receipts: receipts.jsonl              # where the regions' audit receipts are kept, mode 0600 (inclusion checks)
# max_runs: 2                           # runs of one question the regions may answer and charge (1 to 16)
# plan_cache: false                     # plan every question afresh (default: plans kept in "plans" beside keys)
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from hpf.federation.config_files import load_model, resolve_path
from hpf.federation.trust.envelope import DEFAULT_MAX_RUNS, MAX_RUNS
from hpf.federation.trust.tls import PartySettings


class SigningIdentity(BaseModel):
    """A person's certificate and key, for signing questions."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cert: Path
    key: Path

    @field_validator("cert", "key")
    @classmethod
    def _resolve(cls, v: Path, info: ValidationInfo) -> Path:
        return resolve_path(v, info)


class ClientProfile(PartySettings):
    coordinator: str
    catalog: Path | None = None
    keys: Path = Path("keys/client.bfv")
    deadline_ms: int = Field(default=0, ge=0, le=600_000)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    identity: SigningIdentity | None = None
    purpose: str = Field(default="", max_length=64)
    receipts: Path | None = Field(default=Path("receipts.jsonl"), validate_default=True)
    # signed into every question: the first run, then re-runs with the survivors when a region fails, each
    # charged by the regions; nodes refuse a run past it, so a coordinator cannot spend more behind the asker
    max_runs: int = Field(default=DEFAULT_MAX_RUNS, ge=1, le=MAX_RUNS)
    # plans derived before are kept (client.plan_cache) in the folder "plans" beside the key file
    plan_cache: bool = True

    @field_validator("catalog", "keys", "receipts")
    @classmethod
    def _resolve(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return None if v is None else resolve_path(v, info)

    @property
    def plans(self) -> Path | None:
        """Where plans derived before are kept (None: nowhere)."""
        return self.keys.parent / "plans" if self.plan_cache else None


def load_profile(path: Path | str, *, insecure: bool = False) -> ClientProfile:
    """Load the file; ``insecure`` is the command line's explicit ``--insecure``."""
    return load_model(path, ClientProfile, {"insecure": True} if insecure else None)
