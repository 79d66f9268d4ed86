"""What travels encrypted and how it is laid out: the BFV wrapper (:mod:`.he`), the slot, limb and lookup codecs
(:mod:`.slot_codec`, :mod:`.limb_codec`, :mod:`.lookup_codec`) and the check of a lookup's decoded facts
(:mod:`.lookup_consistency`), the pairwise masks of secure aggregation (:mod:`.masking`), the sealing of lookups
(:mod:`.sealing`) and the keyed hashes that record whom a lookup was about (:mod:`.subject_tags`)."""
