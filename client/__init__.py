"""The client library (the `hpf query`, `hpf lookup` and `hpf screen` commands and integrators use it):
:class:`.federation_client.FederationClient` asks aggregate questions and explains them, its base
:class:`.lookups.LookupClient` looks people up and screens them, and theirs, :class:`.session.ClientSession`, holds
the connection, the keys, the signer and the catalog and checks every answer; :mod:`.answers` are what they
return. Beside them: the profile (:mod:`.profile`), the checks of a streamed answer (:mod:`.answer_check`), the
plans kept on disk (:mod:`.plan_cache`) and the last step of an aggregate's answer (:mod:`.finish`)."""
