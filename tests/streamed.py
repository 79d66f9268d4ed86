"""A coordinator's streamed answer read whole, for tests that call the coordinator's gRPC API directly."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from hpf.federation.crypto import he
from hpf.federation.generated import hpf_federation_pb2 as pb


def collect(parts: Iterable[pb.AnswerPart]) -> tuple[pb.QueryResponse, dict[str, list[bytes]]]:
    """The head and each region's ciphertexts, in the order sent (raises the call's RpcError, if it failed)."""
    stream = iter(parts)
    head = next(stream).head
    blobs: dict[str, list[bytes]] = {}
    for part in stream:
        blobs.setdefault(part.ciphertext.node_id, []).append(part.ciphertext.ciphertext)
    return head, blobs


def decrypted(keys: he.ClientKeys, parts: Iterable[pb.AnswerPart], sizes: Sequence[int]) -> list[np.ndarray]:
    """The sum of every answering region's ciphertexts, decrypted (what the client library does, unchecked)."""
    head, blobs = collect(parts)
    return keys.decrypt_sum([blobs[n] for n in head.answered], sizes)


class Stream(list[pb.AnswerPart]):
    """Parts of an answer, as a test's stand-in coordinator returns them (a client cancels a stream it has read)."""

    def cancel(self) -> bool:
        return False


def stream(head: pb.QueryResponse, ciphertexts: dict[str, list[bytes]]) -> Stream:
    """An answer as the coordinator streams it: the head, then each answering region's chunks in order."""
    parts = Stream([pb.AnswerPart(head=head)])
    for node_id in head.answered:
        for chunk, blob in enumerate(ciphertexts[node_id]):
            parts.append(pb.AnswerPart(ciphertext=pb.RegionCiphertext(node_id=node_id, chunk=chunk, ciphertext=blob)))
    return parts
