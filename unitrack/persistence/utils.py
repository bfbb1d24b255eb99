"""Seed module path ``track.persistence.utils``: URI parsing."""

from __future__ import annotations

from unitrack.persistence.uri import parse_options, parse_uri

__all__ = ["parse_options", "parse_uri"]
