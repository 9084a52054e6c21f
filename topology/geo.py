"""Geography: link latency from great-circle distance, and node positions for drawing.

Graphs whose nodes carry coordinates (``lat``/``lon`` in degrees, as ``read_graph`` stores
them from an Internet Topology Zoo file's ``Latitude``/``Longitude``) can take each link's
latency from the distance between its ends: ``latency_ms = base_ms + km / km_per_ms``. Light
in fibre covers about 200 km per ms (refractive index ~1.47); real paths are longer than
great circles, which a smaller ``km_per_ms`` models.
"""

from __future__ import annotations

import math

import networkx as nx

from spargo.topology.errors import TopologyError

#: Mean Earth radius in km (IUGG).
EARTH_RADIUS_KM = 6371.0088
#: Signal speed in optical fibre: c / 1.47 ≈ 204 km/ms, rounded.
FIBRE_KM_PER_MS = 200.0


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees (haversine formula)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2.0 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def parse_latency_from(spec: str) -> float:
    """``geo`` or ``geo:KM_PER_MS`` → km per ms (default :data:`FIBRE_KM_PER_MS`)."""
    name, sep, rest = spec.strip().partition(":")
    if name != "geo":
        raise TopologyError(f"--latency-from {spec!r} is unknown; use geo or geo:KM_PER_MS")
    if not sep:
        return FIBRE_KM_PER_MS
    try:
        km_per_ms = float(rest)
    except ValueError:
        km_per_ms = math.nan
    if not 0 < km_per_ms < math.inf:
        raise TopologyError(
            f"--latency-from {spec!r}: KM_PER_MS must be a positive number (fibre: 200)"
        )
    return km_per_ms


def has_coordinates(g: nx.Graph) -> bool:
    """Whether every node has ``lat`` and ``lon``."""
    return g.number_of_nodes() > 0 and all("lat" in d and "lon" in d for _, d in g.nodes(data=True))


def _name(g: nx.Graph, v: int) -> str:
    return str(g.nodes[v].get("label", v))


def with_geo_latency(
    g: nx.Graph, km_per_ms: float = FIBRE_KM_PER_MS, base_ms: float = 0.0
) -> nx.Graph:
    """A copy of ``g`` whose every edge (each arc) has ``latency_ms = base_ms + km / km_per_ms``.

    Raises :class:`TopologyError` naming a few nodes without coordinates when any lack them.
    Latencies replace any ``latency_ms`` the file gave; other link attributes stay.
    """
    if not 0 < km_per_ms < math.inf or not 0 <= base_ms < math.inf:
        raise TopologyError(f"km_per_ms must be > 0 and base_ms >= 0, got {km_per_ms}, {base_ms}")
    missing = [_name(g, v) for v, d in g.nodes(data=True) if "lat" not in d or "lon" not in d]
    if missing:
        shown = ", ".join(missing[:4]) + (f" … ({len(missing)} in all)" if len(missing) > 4 else "")
        raise TopologyError(
            f"--latency-from geo needs latitude and longitude on every node; missing on {shown}"
        )
    out = g.copy()
    for u, v, data in out.edges(data=True):
        a, b = out.nodes[u], out.nodes[v]
        km = great_circle_km(a["lat"], a["lon"], b["lat"], b["lon"])
        data["latency_ms"] = base_ms + km / km_per_ms
    return out


def positions(g: nx.Graph) -> dict[int, tuple[float, float]] | None:
    """Node → (longitude, latitude) for drawing at coordinates, or None when any lacks them."""
    if not has_coordinates(g):
        return None
    return {v: (float(d["lon"]), float(d["lat"])) for v, d in g.nodes(data=True)}
