"""The coordinator's channel to each region: dialled by the region's name at the catalog's address.

A region's address may change while the coordinator runs (the catalog is re-read, see
:mod:`federation.catalog_watch`): the region is then dialled at its new address, under the same name, from the
next question on. The old channel stays open until the coordinator stops, since a question may still be running
on it; the regions of a federation move seldom.

The channels are asyncio channels: each is dialled and used on the coordinator's event loop
(:mod:`coordinator.event_loop`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import grpc

from hpf.federation.catalog import Catalog
from hpf.federation.generated import hpf_federation_pb2_grpc as pb_grpc
from hpf.federation.trust.channels import secure_aio_channel
from hpf.federation.trust.server_names import ServerNames
from hpf.federation.trust.tls import GRPC_OPTIONS, with_options

# A region back after a restart is tried again within seconds, not after gRPC's default backoff (up to 120 s):
# exact answers wait for every region, so a region wrongly thought down fails them. gRPC's "min reconnect backoff"
# is also the least time a connection attempt is given (20 s by default): left at its default, so that a TLS
# handshake with a busy region (41 at once, at a coordinator's start) is not cut off and the region taken as down.
NODE_CHANNEL_OPTIONS = with_options(GRPC_OPTIONS, initial_reconnect_backoff_ms=200, max_reconnect_backoff_ms=2000)


class NodeChannels:
    """One channel per region. ``overrides`` replaces catalog addresses (tests on port 0); ``names`` is None
    without TLS."""

    def __init__(
        self,
        credentials: grpc.ChannelCredentials | None,
        names: ServerNames | None,
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        self._credentials = credentials
        self._names = names
        self._overrides = dict(overrides or {})
        self._lock = threading.Lock()
        self._dialled: dict[str, tuple[str, grpc.aio.Channel]] = {}  # node id -> (address, channel)
        self._order: list[str] = []
        self._retired: list[grpc.aio.Channel] = []

    def dial(self, catalog: Catalog) -> dict[str, pb_grpc.NodeStub]:
        """A stub per region of ``catalog``, in its order: a region dialled before at the same address keeps its
        channel; one at a new address is dialled there. Called on the event loop the channels are used from."""
        with self._lock:
            for node in catalog.nodes:
                address = self._overrides.get(node.id, node.address)
                known = self._dialled.get(node.id)
                if known is not None and known[0] == address:
                    continue
                # each node is dialled by its own name, so only that node's certificate is accepted
                channel = secure_aio_channel(
                    address,
                    self._credentials,
                    options=NODE_CHANNEL_OPTIONS,
                    server_name=self._names.node(node.id) if self._names else None,
                )
                if known is not None:
                    self._retired.append(known[1])
                self._dialled[node.id] = (address, channel)
            self._order = list(catalog.node_ids)
            return {n: pb_grpc.NodeStub(self._dialled[n][1]) for n in self._order}

    @property
    def channels(self) -> list[grpc.aio.Channel]:
        """The channel each region is dialled on now, in the catalog's order."""
        with self._lock:
            return [self._dialled[n][1] for n in self._order]

    def by_id(self) -> dict[str, grpc.aio.Channel]:
        """The channel each region is dialled on now, by its id."""
        with self._lock:
            return {n: self._dialled[n][1] for n in self._order}

    async def close(self) -> None:
        with self._lock:
            channels = [*(c for _, c in self._dialled.values()), *self._retired]
        for channel in channels:
            await channel.close()
