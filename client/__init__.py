"""The client library (the `hpf query` and `hpf lookup` commands and integrators use it): the profile
(:mod:`.profile`), the client itself (:mod:`.federation_client`), the checks of a streamed answer
(:mod:`.answer_check`), the plans kept on disk (:mod:`.plan_cache`) and the last step of an aggregate's answer
(:mod:`.finish`)."""
