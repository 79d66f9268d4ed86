"""The coordinator's Prometheus metrics, in a registry of its own: its requests
(:class:`federation.metrics.RequestMetrics`) and how many regions it holds unwell. No metric names a region: a
region's timings are its own, in its log and its metrics (docs/protocol.md), never the coordinator's."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hpf.coordinator.region_health import RegionHealth
from hpf.federation.metrics import RequestMetrics


class _Regions(Collector):
    """Read when scraped: the regions in the catalog, and those the coordinator now admits questions without."""

    def __init__(self, health: RegionHealth, regions: Callable[[], int]) -> None:
        self._health = health
        self._regions = regions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("hpf_regions", "Regions in the catalog in force", value=self._regions())
        yield GaugeMetricFamily(
            "hpf_regions_unwell",
            "Regions held unwell now (missed a deadline or could not be reached, and fail their health checks)",
            value=len(self._health.unwell()),
        )


class CoordinatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = RequestMetrics(self.registry)

    def watch_regions(self, health: RegionHealth, regions: Callable[[], int]) -> None:
        """Report the regions' count and how many of them ``health`` holds unwell."""
        self.registry.register(_Regions(health, regions))
