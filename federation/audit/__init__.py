"""The audit trail: each region's append-only log (:mod:`.log`), its entries, receipts and checkpoints
(:mod:`.records`) and their wire form (:mod:`.proto`), the Merkle tree that proves an entry is in it
(:mod:`.merkle`), the audit keys (:mod:`.keys`) and the offline check of a whole log (:mod:`.verify`)."""
