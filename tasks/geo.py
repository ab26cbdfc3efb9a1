"""Spherical geometry on the WGS84 sphere approximation: degrees in, nautical miles and degrees out.

The SQL files use the same haversine formula and earth radius, so Python and SQL agree.
"""

from __future__ import annotations

import numpy as np

EARTH_RADIUS_NM = 3440.065  # mean earth radius (6,371.0 km) in nautical miles


def _unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    phi, lam = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=-1)


def distance_nm(lat1, lon1, lat2, lon2) -> np.ndarray:
    phi1, phi2 = np.radians(lat1), np.radians(lat2)
    dphi, dlam = phi2 - phi1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    h = np.sin(dphi / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlam / 2) ** 2
    return 2 * EARTH_RADIUS_NM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def bearing_deg(lat1, lon1, lat2, lon2) -> np.ndarray:
    phi1, phi2 = np.radians(lat1), np.radians(lat2)
    dlam = np.radians(np.asarray(lon2) - np.asarray(lon1))
    y = np.sin(dlam) * np.cos(phi2)
    x = np.cos(phi1) * np.sin(phi2) - np.sin(phi1) * np.cos(phi2) * np.cos(dlam)
    return np.degrees(np.arctan2(y, x)) % 360.0


def destination(lat: float, lon: float, bearing: float, dist_nm: float) -> tuple[float, float]:
    phi, lam, theta, delta = np.radians(lat), np.radians(lon), np.radians(bearing), dist_nm / EARTH_RADIUS_NM
    phi2 = np.arcsin(np.sin(phi) * np.cos(delta) + np.cos(phi) * np.sin(delta) * np.cos(theta))
    lam2 = lam + np.arctan2(np.sin(theta) * np.sin(delta) * np.cos(phi), np.cos(delta) - np.sin(phi) * np.sin(phi2))
    return float(np.degrees(phi2)), float((np.degrees(lam2) + 540.0) % 360.0 - 180.0)


def great_circle_points(lat0, lon0, lat1, lon1, fraction) -> tuple[np.ndarray, np.ndarray]:
    """Points at `fraction` (0..1) of the way along each great circle, vectorised."""
    a, b = _unit_vectors(lat0, lon0), _unit_vectors(lat1, lon1)
    omega = np.arccos(np.clip(np.sum(a * b, axis=-1), -1.0, 1.0))
    sin_omega = np.sin(omega)
    moving = sin_omega > 1e-12
    safe = np.where(moving, sin_omega, 1.0)
    w0 = np.where(moving, np.sin((1 - fraction) * omega) / safe, 1 - fraction)
    w1 = np.where(moving, np.sin(fraction * omega) / safe, fraction)
    p = w0[:, None] * a + w1[:, None] * b
    lat = np.degrees(np.arcsin(np.clip(p[:, 2] / np.linalg.norm(p, axis=1), -1.0, 1.0)))
    lon = np.degrees(np.arctan2(p[:, 1], p[:, 0]))
    return lat, lon
