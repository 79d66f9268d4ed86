"""A party's Prometheus metrics: what it serves them from, and what every server counts of its requests.

Each running node or coordinator keeps its own :class:`~prometheus_client.CollectorRegistry` (several parties
run in one process in the tests and the demo; the library's global registry is never used) and serves it only
when its configuration has a ``metrics:`` section. The endpoint listens on loopback; another address is refused
(``CONFIG_METRICS_EXPOSED``) unless ``metrics.tls`` is on, and then it serves HTTPS with the party's own mutual
TLS: its server certificate and key, and a client certificate required, from the federation's CA, not revoked,
and an operator's (:mod:`federation.metrics_endpoint`, which also bounds what a client can hold).

A label carries only an operation (a gRPC method's name) or a stable error code: never a value, an identity, an
identifier, SQL text, a purpose or a region.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hpf.federation.errors import ConfigError
from hpf.federation.metrics_endpoint import MetricsHTTPServer, ScraperGate, tls_context
from hpf.federation.trust.revocation import RevocationList
from hpf.federation.trust.tls import TlsConfig

log = logging.getLogger("hpf.metrics")

DEFAULT_LISTEN = "127.0.0.1:9464"
# coarse: a health check and a description take milliseconds, a question up to the coordinator's wait
LATENCY_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class MetricsSettings(BaseModel):
    """Where a party serves its Prometheus metrics (``metrics: {listen: 127.0.0.1:9464}``); without this section
    it serves none."""

    model_config = ConfigDict(extra="forbid")
    listen: str = Field(
        default=DEFAULT_LISTEN,
        min_length=3,
        max_length=300,
        description="host:port of the metrics endpoint (port 0: a free one); a loopback address unless tls is on",
    )
    tls: bool = Field(
        default=False,
        description="serve HTTPS with the party's own certificate and key, to an operator's certificate of the "
        "federation's CA only, not revoked (needed to listen on any address but loopback)",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        try:
            split_listen(v)
        except ConfigError as err:
            raise ValueError(f"{err.message} ({err.hint})") from None
        return v

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9464`` for IPv6) as its host and port.

    >>> split_listen("127.0.0.1:9464"), split_listen("[::1]:0")
    (('127.0.0.1', 9464), ('::1', 0))
    """
    host, sep, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"metrics.listen {listen!r} is not host:port",
            code="CONFIG_INVALID",
            hint="write e.g. 'metrics: {listen: 127.0.0.1:9464}' (port 0 picks a free one)",
        )
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``): only this machine can reach it.

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, True, False)
    >>> is_loopback("metrics.example.org"), is_loopback("")
    (False, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost may resolve anywhere
        return False


def check_metrics(metrics: MetricsSettings | None, tls: TlsConfig | None) -> None:
    """A party's ``metrics`` section, checked when its configuration is loaded: an endpoint off loopback only
    over the party's own mutual TLS (``CONFIG_METRICS_EXPOSED``), and TLS only for a party that has
    certificates (``CONFIG_METRICS_TLS_MISSING``)."""
    if metrics is None:
        return
    host = metrics.host
    if not metrics.tls and not is_loopback(host):
        raise ConfigError(
            f"metrics.listen {metrics.listen} is not a loopback address, and metrics.tls is off: anyone who "
            "reaches it could read the party's metrics",
            code="CONFIG_METRICS_EXPOSED",
            hint="listen on 127.0.0.1 (scrape from this machine), or set 'metrics: {tls: true}' so a scraper "
            "needs a certificate of the federation",
        )
    if metrics.tls and tls is None:
        raise ConfigError(
            "metrics.tls is on, and the party has no certificates to serve it with (it runs insecure)",
            code="CONFIG_METRICS_TLS_MISSING",
            hint="give the party 'tls: {ca, cert, key}', or drop metrics.tls and listen on loopback",
        )


class RequestMetrics:
    """What every server counts of the requests it answers: by operation (the method's name) and the stable code
    its caller got (``OK`` for an answer), and how long each operation took."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "hpf_requests",
            "Requests answered, by operation (the RPC method) and the code the caller got (OK, or a stable error code)",
            ("operation", "code"),
            registry=registry,
        )
        self.latency = Histogram(
            "hpf_request_seconds",
            "Time to answer a request, by operation (the RPC method)",
            ("operation",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def observe(self, operation: str, code: str, seconds: float) -> None:
        self.requests.labels(operation=operation, code=code).inc()
        self.latency.labels(operation=operation).observe(seconds)


Observe = Callable[[str, str, float], None]  # operation, code, seconds (see RequestMetrics.observe)


@dataclass
class MetricsServer:
    """A running metrics endpoint; :meth:`stop` closes it (once is enough)."""

    server: MetricsHTTPServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(
    settings: MetricsSettings,
    tls: TlsConfig | None,
    registry: CollectorRegistry,
    source: str,
    *,
    revocations: RevocationList | None = None,
) -> MetricsServer:
    """Serve ``registry`` on ``settings.listen``: plain HTTP on loopback, or HTTPS with ``tls`` (the party's own
    certificate and key) when ``settings.tls``, read only by an operator's certificate of the federation's CA that
    ``revocations`` (the list the party's gRPC service checks) does not revoke."""
    check_metrics(settings, tls)  # a model built in code is held to what a file is held to
    host, port = settings.host, settings.port
    context, gate = None, None
    if settings.tls:
        assert tls is not None
        if revocations is None:
            raise ConfigError(
                f"{source}: metrics over TLS need the party's revocation list",
                code="CONFIG_INVALID",
                hint="serve them with the revocation list the party's own service checks",
            )
        context, gate = tls_context(tls), ScraperGate(revocations)
    try:
        server = MetricsHTTPServer((host, port), registry, source, context, gate)
    except OSError as exc:
        raise ConfigError(
            f"{source}: cannot serve metrics on {settings.listen} ({exc.strerror or type(exc).__name__})",
            code="SERVER_BIND_FAILED",
            hint="check metrics.listen (host:port) and that no other process holds the port",
        ) from None
    thread = threading.Thread(target=server.serve_forever, name=f"metrics {source}", daemon=True)
    thread.start()
    running = MetricsServer(server, thread)
    log.info("%s serves metrics on %s:%d (%s)", source, host, running.port, "mTLS" if settings.tls else "loopback")
    return running
