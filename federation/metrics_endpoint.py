"""The HTTP server a party's metrics are read from: plain HTTP on loopback, or HTTPS that only an operator reads.

The listening thread only accepts a TCP connection and hands it to a thread of its own; everything a client
controls happens there, under a deadline: the TLS handshake (``HANDSHAKE_TIMEOUT_S`` for each step of it), and
the whole connection (``CONNECTION_DEADLINE_S``, after which its socket is shut down). A client that connects and
says nothing holds one thread for seconds, not the endpoint. At most ``MAX_CONNECTIONS`` connections are served
at once; one more is closed as soon as it is accepted.

Over TLS the client certificate must be verified by the federation's CA (the handshake fails otherwise), not be
revoked by the party's revocation list (the very :class:`~federation.trust.revocation.RevocationList` its gRPC
service checks, re-read when ``crl.pem`` changes; a list that cannot be used refuses every scraper), and carry an
identity on :data:`METRICS_READERS`, an allow-list: a person with the role ``operator``. A region's metrics hold
its own timings, which askers must not see (protocol.md). Any other certificate gets ``403`` and no reason.

Only ``GET /metrics`` is answered (the registry in Prometheus's text format); any other path is ``404``.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from hpf.federation.errors import AuthError
from hpf.federation.trust.certificates import MALFORMED_CERTIFICATE, identity_of, load_certificate
from hpf.federation.trust.revocation import RevocationList
from hpf.federation.trust.tls import TlsConfig
from hpf.federation.trust.tls_material import load_material

log = logging.getLogger("hpf.metrics")

HANDSHAKE_TIMEOUT_S = 5.0  # each read or write of the TLS handshake
CONNECTION_DEADLINE_S = 15.0  # a whole connection: handshake, request and answer (one request per connection)
REQUEST_TIMEOUT_S = 5.0  # each read or write of the request and the answer
MAX_CONNECTIONS = 16
METRICS_PATH = "/metrics"

# (kind, role) of the certificates that may read a party's metrics over TLS: an allow-list (protocol.md)
METRICS_READERS: frozenset[tuple[str, str | None]] = frozenset({("person", "operator")})


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """The party's own certificate and key, and a client certificate required and verified by the federation's
    CA (TLS 1.2 at least). The files are checked first, as for the gRPC service (coded errors, not ssl's)."""
    load_material(tls, "server")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(tls.cert), str(tls.key))
    context.load_verify_locations(cafile=str(tls.ca))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class ScraperGate:
    """Whether a verified client certificate may read the metrics: in force (not revoked) and an allowed kind."""

    def __init__(self, revocations: RevocationList) -> None:
        self._revocations = revocations

    def refusal(self, der: bytes | None) -> str | None:
        """Why the certificate (DER) may not read the metrics, or None when it may. The reason names no one."""
        if der is None:
            return "no client certificate"
        try:
            identity = identity_of(load_certificate(der, der=True))
            self._revocations.check(identity.serial, "scraper's")
        except AuthError as err:
            return err.code
        except MALFORMED_CERTIFICATE:
            return "a malformed certificate"
        if (identity.kind, identity.role) not in METRICS_READERS:
            return f"a {identity.role or identity.kind} certificate, not an operator's"
        return None


class _MetricsHandler(BaseHTTPRequestHandler):
    server: MetricsHTTPServer
    timeout = REQUEST_TIMEOUT_S
    server_version = "hpf-metrics"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        refusal = self.server.refusal(self.connection)
        if refusal is not None:
            log.warning("%s: a metrics scraper refused (%s)", self.server.source, refusal)
            self._answer(403, b"forbidden\n", "text/plain; charset=utf-8")
        elif urlsplit(self.path).path != METRICS_PATH:
            self._answer(404, b"not found\n", "text/plain; charset=utf-8")
        else:
            self._answer(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        """Nothing per request: a client's address or path is not this party's log's business."""


class MetricsHTTPServer(ThreadingHTTPServer):
    """Serves ``registry`` at ``/metrics``, over TLS when ``context`` is given (then ``gate`` decides who may read);
    a thread per connection, at most ``MAX_CONNECTIONS`` at once, each under a deadline."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        source: str,
        context: ssl.SSLContext | None = None,
        gate: ScraperGate | None = None,
    ) -> None:
        if (context is None) != (gate is None):
            raise ValueError("a TLS context and a scraper gate go together")
        self.address_family = _family(address)
        self.registry = registry
        self.source = source
        self._context = context
        self._gate = gate
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, _MetricsHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Runs on the listening thread: hands the connection to a thread of its own, or closes it when
        ``MAX_CONNECTIONS`` are being served."""
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        """On the connection's own thread: the TLS handshake (with its deadline), then the request."""
        connection: socket.socket = request
        if self._context is not None:  # no I/O yet: the handshake is below, under the deadline
            connection.settimeout(HANDSHAKE_TIMEOUT_S)
            try:
                connection = self._context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
            except OSError:  # the client is gone already (the socket is closed by the caller)
                return
        cut = threading.Timer(CONNECTION_DEADLINE_S, _cut, (connection,))
        cut.daemon = True
        cut.start()
        try:
            if isinstance(connection, ssl.SSLSocket):
                try:
                    connection.do_handshake()
                except OSError:  # ssl.SSLError and a timeout are OSErrors: no certificate, a wrong one, silence
                    return
            _MetricsHandler(connection, client_address, self)
        finally:
            cut.cancel()
            cut.join()  # a cut under way ends before the socket is closed (its number may be reused then)
            connection.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that failed (reset, timed out, cut at its deadline) is logged without a traceback."""
        log.debug("%s: a metrics connection failed", self.source, exc_info=False)

    def refusal(self, connection: socket.socket) -> str | None:
        """Why the client on ``connection`` may not read the metrics (None: it may; plain HTTP on loopback:
        anyone on this machine may)."""
        if self._gate is None:
            return None
        assert isinstance(connection, ssl.SSLSocket)
        return self._gate.refusal(connection.getpeercert(binary_form=True))


def _cut(connection: socket.socket) -> None:
    """Shut a connection down from another thread once its deadline is past: the thread blocked reading it (in
    the handshake or the request) wakes up at once. The plain socket's shutdown, under TLS too: the TLS layer's
    own would tear its state down under the reading thread."""
    try:
        socket.socket.shutdown(connection, socket.SHUT_RDWR)
    except OSError:  # closed already
        pass


def _family(address: tuple[str, int]) -> socket.AddressFamily:
    """IPv6 for an IPv6 host (``::1``), IPv4 otherwise."""
    try:
        infos = socket.getaddrinfo(address[0], address[1], type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return socket.AF_INET  # binding reports it
    return infos[0][0] if infos else socket.AF_INET
