"""What travels encrypted and how it is laid out: the BFV wrapper (:mod:`.he`), the slot, limb and lookup codecs
(:mod:`.slot_codec`, :mod:`.limb_codec`, :mod:`.lookup_codec`), the pairwise masks of secure aggregation
(:mod:`.masking`) and the sealing of lookups (:mod:`.sealing`)."""
