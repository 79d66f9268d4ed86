"""The one place where errors become a readable line on stderr and a non-zero exit."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

from hpf.federation.errors import (
    AuditError,
    AuthError,
    ConfigError,
    CryptoError,
    FederationError,
    PlanError,
    PolicyViolation,
    UnavailableError,
    from_rpc_error,
    printable,
)

P = ParamSpec("P")
R = TypeVar("R")

EXIT_CODES: dict[type[FederationError], int] = {
    PlanError: 2,
    ConfigError: 2,
    AuthError: 3,
    PolicyViolation: 4,
    UnavailableError: 5,
    CryptoError: 6,
    AuditError: 7,
}


def exit_code(err: FederationError) -> int:
    for cls, code in EXIT_CODES.items():
        if isinstance(err, cls):
            return code
    return 1


def report(err: FederationError) -> int:
    # a message may quote what another party sent (a checkpoint's time, a region's words): no control or format
    # character reaches the terminal, whatever the message's lines hold
    shown = "\n".join(printable(line, limit=1 << 16) for line in str(err).split("\n"))
    typer.echo(f"error: {shown}", err=True)
    return exit_code(err)


def cli_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Map FederationError and grpc.RpcError to one line on stderr and a stable exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except FederationError as err:
            raise typer.Exit(report(err)) from None
        except Exception as err:
            # only a command that made a call has loaded gRPC, and only such a call raises its RpcError: the
            # commands that make none (and every --help) never import it for this check
            grpc = sys.modules.get("grpc")
            if grpc is None or not isinstance(err, grpc.RpcError):
                raise
            raise typer.Exit(report(from_rpc_error(err))) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper
