"""The synthetic federation and the demo, shared by `hpf demo`, the benchmarks and the tests.

:mod:`demo.synth` generates each region's tables; :mod:`demo.launcher` lays out and starts a local federation
(certificates, configs, one process per party); :mod:`demo.run` is what `hpf demo` runs in it: the example
queries (:mod:`demo.examples`) and person lookups (:mod:`demo.lookups`), each checked against the oracle over
the pooled files (:mod:`demo.oracle`). The demo may use every party but never the command: how answers are
shown, it is handed (:class:`demo.renderers.Renderers`).
"""
