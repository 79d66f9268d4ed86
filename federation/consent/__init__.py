"""A subject's consent to a lookup: the tokens and their checks (:mod:`.tokens`), the issuer that signs them
(:mod:`.issuer`), the list of revoked grants (:mod:`.revocations`), a region's signed refusals (:mod:`.refusals`)
and the consent service (:mod:`.service`)."""
