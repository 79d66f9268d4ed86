"""The asker's side of a federation of separate hosts: the Python client, run in the client's host.

Started in the client host's namespace (``ip netns exec <ns> python tests/netns_client.py``), it reads one JSON
request a line on stdin and answers each with one line on stdout: ``ok <base64 pickle of the answer>`` or
``error <code> <message>``. A request names the person whose profile asks (``profile``: a file) and the call:

- ``{"op": "query", "profile": ..., "sql": ..., "purpose": ...}``: a :class:`QueryAnswer`;
- ``{"op": "lookup", "profile": ..., "ids": [...], "purpose": ..., "consent": ...}``: a :class:`LookupAnswer`;
- ``{"op": "screen", "profile": ..., "ids": [...], "tokens": [...], "purpose": ...}``: a :class:`LookupAnswer`.

One client per profile is kept across requests, as an asker's program keeps its channel to the coordinator.
"""

from __future__ import annotations

import base64
import json
import pickle
import sys
from typing import Any

from hpf.client.federation_client import FederationClient
from hpf.client.profile import load_profile
from hpf.federation.errors import FederationError


def _answer(clients: dict[str, FederationClient], request: dict[str, Any]) -> object:
    profile = request["profile"]
    if profile not in clients:
        clients[profile] = FederationClient(load_profile(profile))
    client = clients[profile]
    if request["op"] == "query":
        return client.query(request["sql"], purpose=request.get("purpose"))
    if request["op"] == "lookup":
        return client.lookup(request["ids"], purpose=request.get("purpose"), consent=request.get("consent"))
    if request["op"] == "screen":
        return client.screen(request["ids"], purpose=request.get("purpose"), tokens=request["tokens"])
    raise ValueError(f"unknown op {request['op']!r}")


def main() -> None:
    clients: dict[str, FederationClient] = {}
    print("ready", flush=True)
    try:
        for line in sys.stdin:
            try:
                answer = _answer(clients, json.loads(line))
            except FederationError as err:
                print(f"error {err.code} {str(err).splitlines()[0] if str(err) else ''}", flush=True)
                continue
            print("ok " + base64.b64encode(pickle.dumps(answer)).decode("ascii"), flush=True)
    finally:
        for client in clients.values():
            client.close()


if __name__ == "__main__":
    main()
