"""Who is who and what they signed: the PKI (:mod:`.pki`) and the CA's record of its revocation lists
(:mod:`.ca_record`), mutual TLS (:mod:`.tls`), revocation lists (:mod:`.revocation`), which party may call which
service (:mod:`.callers`), signed question envelopes (:mod:`.envelope`), a region's signed answer statements
(:mod:`.statements`) and its signed explain verdicts (:mod:`.verdicts`)."""
