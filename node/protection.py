"""What a node adds to an answer so that no one reads its partial: pairwise masks, and DP noise where asked.

**Masks.** The coordinator names, per run, the participant set whose answers it will sum. This node checks it
(regions of the catalog, this one among them, each with a published agreement key, at least the policy's
``secure_aggregation.min_participants``), derives the run id from the signed question's query id and the set
(:func:`federation.crypto.masking.run_id`), and adds to every slot, modulo the plain modulus, a mask from each
pairwise X25519 agreement. The masks cancel only in the sum over exactly that set: one region's ciphertext,
decrypted by the client with the coordinator's help, is uniformly random.

**Noise.** Under DP, every cell (empty ones too) gets this node's share of the run's Skellam noise. The seed is
HKDF of the node's noise key and the run id: asked the same run again, the node gives the same answer, so
repeating a question does not average the noise away. A re-run with the survivors of a failed run is a new run,
with new noise, and is charged to the asker's budget as the new release it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hpf.federation.catalog import Catalog
from hpf.federation.crypto import masking
from hpf.federation.crypto.sealing import AgreementKey, load_public_b64
from hpf.federation.errors import CryptoError, PlanError, PolicyViolation
from hpf.federation.privacy import skellam
from hpf.federation.privacy.dp_plan import DpTerms
from hpf.federation.trust import statements

NOISE_KEY = "noise.key"  # beside the agreement key: the secret that seeds this node's DP noise
_NOISE_SALT = b"hpf-dp-noise/v1"


@dataclass(frozen=True)
class Run:
    """One run of a signed question: its participant set (sorted), the run id masks and noise derive from, and
    the other participants' agreement keys it was checked with (the masks use those, whatever the catalog
    publishes by the time they are added)."""

    query_id: str
    id: str
    participants: tuple[str, ...]
    peer_keys: Mapping[str, bytes] = field(default_factory=dict, compare=False, repr=False)


def _agreement_keys(catalog: Catalog) -> dict[str, bytes | None]:
    """Each region's agreement public key, decoded once (the catalog checked it is 32 bytes in base64)."""
    return {n.id: load_public_b64(n.agreement_key) if n.agreement_key else None for n in catalog.nodes}


class Protector:
    def __init__(self, node_id: str, catalog: Catalog, agreement: AgreementKey, noise_key: bytes) -> None:
        self.node_id = node_id
        self._agreement = agreement
        self._noise_key = noise_key
        self._keys = _agreement_keys(catalog)  # replaced whole (never changed in place) by publish()

    def publish(self, catalog: Catalog) -> None:
        """Take the agreement keys ``catalog`` publishes: a running node takes a catalog that publishes keys where
        there were none, for the same regions (see :mod:`federation.catalog_watch`)."""
        self._keys = _agreement_keys(catalog)

    def run(self, query_id: str, participants: Sequence[str], minimum: int, terms: Mapping[str, Any]) -> Run:
        """The run the coordinator names, checked: PlanError for a malformed set, PolicyViolation below
        ``minimum`` regions (``secure_aggregation.min_participants``). Its id binds the privacy ``terms`` this
        node answers under (see :func:`federation.crypto.masking.run_id`)."""
        named = list(participants)
        keys = self._keys  # one catalog's keys for the whole run, however the catalog changes meanwhile
        if self.node_id not in named or len(set(named)) != len(named) or any(p not in keys for p in named):
            raise PlanError(
                "the participant set must name this region, each region once, and only regions of the catalog",
                code="SECAGG_PARTICIPANTS_INVALID",
            )
        if len(named) < minimum:
            raise PolicyViolation(
                f"{self.node_id}: this region adds its answer to sums over at least {minimum} regions; "
                f"this run has {len(named)}",
                code="POLICY_TOO_FEW_PARTICIPANTS",
                rule=f"{self.node_id}: secure_aggregation.min_participants",
                hint="ask when more regions are up, or an operator may lower the minimum",
            )
        missing = [p for p in named if p != self.node_id and not keys[p]]
        if missing:
            raise CryptoError(
                f"the catalog publishes no agreement key for region(s) {', '.join(missing)}",
                code="SECAGG_PEER_KEY_MISSING",
                hint="publish every region's agreement_key in the catalog",
            )
        ordered = tuple(sorted(named))
        run = masking.run_id(query_id, ordered, statements.canonical_terms(terms))
        peers = {p: key for p in ordered if p != self.node_id and (key := keys[p])}
        return Run(query_id=query_id, id=run, participants=ordered, peer_keys=peers)

    def check_exact_over_everyone(self, run: Run, subsets_allowed: bool) -> None:
        """An exact answer is summed over every region of the catalog (unless ``subsets_allowed``, the policy's
        ``secure_aggregation.exact_subsets``): set against a full run's sum, which a coordinator and the asker
        together may hold, a sum without some regions shows theirs by difference. A DP answer may leave a failed
        region out: each run carries fresh noise and is charged as a release."""
        left_out = sorted(set(self._keys) - set(run.participants))
        if left_out and not subsets_allowed:
            raise PolicyViolation(
                f"{self.node_id}: an exact answer is summed over every region; a run without region(s) "
                f"{', '.join(left_out)} would show their partials by difference from a run with them",
                code="POLICY_EXACT_NEEDS_ALL_REGIONS",
                rule=f"{self.node_id}: secure_aggregation.exact_subsets",
                hint="ask again when every region is up (answers under differential privacy may leave one out)",
            )

    def mask(self, run: Run, pieces: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``pieces`` (the ciphertexts' slot vectors) with this node's pairwise masks for ``run`` added."""
        if len(run.participants) == 1:
            return list(pieces)
        peers = {**run.peer_keys, self.node_id: self._agreement.public}
        flat = np.concatenate(pieces)
        masked = masking.apply(flat, masking.mask(self.node_id, peers, self._agreement.exchange, run.id, flat.size))
        return np.split(masked, np.cumsum([p.size for p in pieces])[:-1])

    def noise(self, run: Run, terms: DpTerms, cells: int) -> np.ndarray:
        """This node's noise share for ``run``: one row per cell, one column per plan component."""
        seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=_NOISE_SALT, info=run.id.encode()).derive(
            self._noise_key
        )
        mus = np.tile(np.array([c.mu for c in terms.components], dtype=np.float64), cells)
        shares = skellam.sample_shares(seed, mus, len(run.participants))
        return shares.reshape(cells, len(terms.components))
