"""How a party talks: mutual TLS for every gRPC server and channel in the federation, or explicitly insecure.

Secure by default: a party needs a CA certificate, its own certificate and its key. ``--insecure`` is
the only way to run without them, and it logs a warning. Half-given certificate options are an error.
The files are checked before gRPC sees them (:mod:`federation.trust.tls_material`); servers are started
(:mod:`federation.trust.servers`) and dialled by name (:mod:`federation.trust.channels`) with them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

from hpf.federation.config_files import resolve_path
from hpf.federation.errors import ConfigError

log = logging.getLogger("hpf.tls")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
GRPC_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)


class TlsConfig(BaseModel):
    """Where a party's CA certificate, own certificate and key live (relative paths: from the YAML file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca: Path
    cert: Path
    key: Path

    @field_validator("ca", "cert", "key")
    @classmethod
    def _resolve(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve_path(value, info)


class PartySettings(BaseModel):
    """The part of every party's config that says how it talks: mutual TLS, or explicitly insecure."""

    model_config = ConfigDict(extra="forbid")

    tls: TlsConfig | None = None
    insecure: bool = False

    @model_validator(mode="after")
    def _tls_or_insecure(self) -> PartySettings:
        if self.tls is None and not self.insecure:
            raise ValueError(
                "give 'tls: {ca, cert, key}' (run `hpf pki init`), or 'insecure: true' for local development"
            )
        if self.tls is not None and self.insecure:
            raise ValueError("'tls' and 'insecure: true' are both given; drop one")
        return self


def require_tls(tls: TlsConfig | None, insecure: bool, *, source: str = "the options") -> TlsConfig | None:
    """Enforce "TLS unless explicitly insecure" for an owning config; warns when insecure."""
    if tls is not None and insecure:
        raise ConfigError(
            f"{source}: certificates and insecure mode are both given",
            code="TLS_OPTIONS_CONFLICT",
            hint="drop --insecure (or `insecure: true`) to use the certificates",
        )
    if tls is None and not insecure:
        raise ConfigError(
            f"{source}: no TLS certificates given",
            code="TLS_REQUIRED",
            hint="give --ca, --cert and --key (run `hpf pki init --dir DIR --federation NAME` to make them), "
            "or --insecure for local development only",
        )
    if insecure:
        log.warning(
            "TLS is off (insecure mode): gRPC traffic is unencrypted and unauthenticated; "
            "use this for local development only"
        )
    return tls


def tls_from_options(
    ca: Path | str | None, cert: Path | str | None, key: Path | str | None, insecure: bool = False
) -> TlsConfig | None:
    """Turn command-line ``--ca/--cert/--key/--insecure`` into a TlsConfig, or None when insecure."""
    given = {"--ca": ca, "--cert": cert, "--key": key}
    missing = [name for name, value in given.items() if value is None]
    if missing and len(missing) < len(given):
        raise ConfigError(
            f"incomplete certificate options: {', '.join(missing)} missing",
            code="TLS_OPTIONS_INCOMPLETE",
            hint="give all of --ca, --cert and --key (or none of them, with --insecure)",
        )
    tls = None if missing else TlsConfig(ca=Path(str(ca)), cert=Path(str(cert)), key=Path(str(key)))
    return require_tls(tls, insecure)


def with_options(base: Sequence[tuple[str, Any]], **overrides: Any) -> tuple[tuple[str, Any], ...]:
    """``base`` with some options replaced (gRPC takes the first value of a repeated option).

    Keyword names are option names without the ``grpc.`` prefix, e.g. ``max_receive_message_length=4 << 20``.
    """
    replaced = {f"grpc.{k}": v for k, v in overrides.items()}
    kept = tuple((k, v) for k, v in base if k not in replaced)
    return kept + tuple(replaced.items())
