"""The coordinator's configuration file (``coordinator.yaml``)::

listen: 127.0.0.1:50050
catalog: federation.yaml       # node ids and addresses come from here
deadline_ms: 10000             # how long to wait for the regions
min_deadline_ms: 5000          # the floor: an asker may ask for a longer wait, never a shorter one
tls: {ca: pki/ca.pem, cert: pki/coordinator.pem, key: pki/coordinator.key}
# insecure: true               # plaintext, local development only (logs a warning)
revocations: pki/crl.pem       # the federation's revocation list, re-read when it changes
# revocation_state: state/revocation-state.json   # keep the newest list's number across restarts (default: memory)
rate_limit: {requests: 600, per_seconds: 60}   # per person, over questions, explains, audit proofs, catalogs
# max_workers: 16              # threads for checking and planning; waiting for the regions holds none
# metrics: {listen: 127.0.0.1:9464}   # Prometheus metrics (none without it); off loopback only with tls: true
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator, model_validator

from hpf.federation.config_files import load_model, resolve_path
from hpf.federation.metrics import MetricsSettings, check_metrics
from hpf.federation.trust.envelope import TrustSettings
from hpf.federation.trust.tls import PartySettings
from hpf.policies.model import RateLimit


class CoordinatorConfig(PartySettings, TrustSettings):
    listen: str = "127.0.0.1:50050"
    catalog: Path
    deadline_ms: int = Field(default=10_000, ge=100, le=600_000)
    # an asker choosing a short deadline could time out a region that is slow only on rows it looks for, and
    # read which region holds them from which one is named missing: the wait is the server's, at least this
    # (keep it above every node's limits.query_ms, so a node stopped at its own limit still answers on time)
    min_deadline_ms: int = Field(default=5_000, ge=100, le=600_000)
    # threads for the work that takes the processor (checking signatures, planning, checking the regions'
    # ciphertexts); a question waiting for the regions holds none of them
    max_workers: int = Field(default=16, ge=1, le=256)
    # every request a person sends reaches every node's audit log: one person cannot flood them
    rate_limit: RateLimit | None = RateLimit(requests=600, per_seconds=60)
    metrics: MetricsSettings | None = None  # where its Prometheus metrics are served (none without it)

    @model_validator(mode="after")
    def _floor(self) -> CoordinatorConfig:
        if self.min_deadline_ms > self.deadline_ms:
            raise ValueError("min_deadline_ms is above deadline_ms: the floor cannot exceed the default wait")
        check_metrics(self.metrics, self.tls)
        return self

    @field_validator("catalog")
    @classmethod
    def _catalog(cls, v: Path, info: ValidationInfo) -> Path:
        return resolve_path(v, info)


def load_coordinator_config(path: Path | str, *, insecure: bool = False) -> CoordinatorConfig:
    """Load the file; ``insecure`` is the command line's explicit ``--insecure``."""
    return load_model(path, CoordinatorConfig, {"insecure": True} if insecure else None)
