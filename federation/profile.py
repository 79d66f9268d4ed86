"""A client profile (``client.yaml``): everything a caseworker's CLI or an integrator needs::

coordinator: 127.0.0.1:50050
catalog: federation.yaml                # or omit: fetched from the coordinator
keys: keys/client.bfv                   # the BFV key pair (secret inside, mode 0600; made on first use)
tls: {ca: pki/ca.pem, cert: pki/people/caseworker.pem, key: pki/people/caseworker.key}
# insecure: true                        # plaintext, local development only
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from federation.config_files import load_model
from federation.tls import TlsConfig


class ClientProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    coordinator: str
    catalog: Path | None = None
    keys: Path = Path("keys/client.bfv")
    tls: TlsConfig | None = None
    insecure: bool = False
    deadline_ms: int = Field(default=0, ge=0, le=600_000)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)

    @field_validator("catalog", "keys")
    @classmethod
    def _resolve(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if v is None:
            return None
        base = (info.context or {}).get("base_dir") if isinstance(info.context, dict) else None
        v = v.expanduser()
        return Path(base) / v if base is not None and not v.is_absolute() else v

    @model_validator(mode="after")
    def _tls_or_insecure(self) -> ClientProfile:
        if self.tls is None and not self.insecure:
            raise ValueError(
                "give 'tls: {ca, cert, key}' (run `hpf pki init`), or 'insecure: true' for local development"
            )
        if self.tls is not None and self.insecure:
            raise ValueError("'tls' and 'insecure: true' are both given; drop one")
        return self


def load_profile(path: Path | str, *, insecure: bool = False) -> ClientProfile:
    """Load the file; ``insecure`` is the command line's explicit ``--insecure``."""
    return load_model(path, ClientProfile, {"insecure": True} if insecure else None)
