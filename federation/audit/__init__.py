"""The audit trail: each region's append-only log (:mod:`.log`) and the repair of what a crash leaves in it
(:mod:`.repair`), its entries, receipts and checkpoints (:mod:`.records`) and their wire form (:mod:`.proto`), the
Merkle tree that proves an entry is in it (:mod:`.merkle`), the audit keys (:mod:`.keys`), the one streaming pass
over a whole log (:mod:`.scan`) and the offline check built on it (:mod:`.verify`)."""
