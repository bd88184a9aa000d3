"""Client location from a MaxMind GeoIP2/GeoLite2 City database (optional, never downloaded)."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


class GeoIp:
    """Looks up (latitude, longitude) for an IP address; None when unknown or no database."""

    def __init__(self, path: str | Path | None) -> None:
        self._reader = None
        if not path:
            return
        import maxminddb  # imported only when a database is configured

        try:
            self._reader = maxminddb.open_database(str(path), maxminddb.MODE_MMAP)
        except (OSError, maxminddb.InvalidDatabaseError) as exc:
            raise ValueError(f"cannot open GeoIP database {path}: {exc}") from exc
        log.info("GeoIP database %s loaded (%s)", path, self._reader.metadata().database_type)

    def locate(self, ip: str) -> tuple[float, float] | None:
        if self._reader is None:
            return None
        try:
            rec = self._reader.get(ip)
        except ValueError:
            return None
        if not isinstance(rec, dict):
            return None
        loc = rec.get("location")
        if not isinstance(loc, dict) or "latitude" not in loc or "longitude" not in loc:
            return None
        lat, lon = loc["latitude"], loc["longitude"]
        if not isinstance(lat, int | float) or not isinstance(lon, int | float):
            return None
        return float(lat), float(lon)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
