"""The coordinator's configuration file (``coordinator.yaml``)::

listen: 127.0.0.1:50050
catalog: federation.yaml       # node ids and addresses come from here
deadline_ms: 10000             # how long to wait for the regions
tls: {ca: pki/ca.pem, cert: pki/coordinator.pem, key: pki/coordinator.key}
# insecure: true               # plaintext, local development only (logs a warning)
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from federation.config_files import load_model
from federation.tls import TlsConfig


class CoordinatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    listen: str = "127.0.0.1:50050"
    catalog: Path
    deadline_ms: int = Field(default=10_000, ge=100, le=600_000)
    tls: TlsConfig | None = None
    insecure: bool = False
    max_workers: int = Field(default=16, ge=1, le=256)

    @field_validator("catalog")
    @classmethod
    def _catalog(cls, v: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir") if isinstance(info.context, dict) else None
        v = v.expanduser()
        return Path(base) / v if base is not None and not v.is_absolute() else v

    @model_validator(mode="after")
    def _tls_or_insecure(self) -> CoordinatorConfig:
        if self.tls is None and not self.insecure:
            raise ValueError(
                "give 'tls: {ca, cert, key}' (run `hpf pki init`), or 'insecure: true' for local development"
            )
        if self.tls is not None and self.insecure:
            raise ValueError("'tls' and 'insecure: true' are both given; drop one")
        return self


def load_coordinator_config(path: Path | str, *, insecure: bool = False) -> CoordinatorConfig:
    """Load the file; ``insecure`` is the command line's explicit ``--insecure``."""
    return load_model(path, CoordinatorConfig, {"insecure": True} if insecure else None)
