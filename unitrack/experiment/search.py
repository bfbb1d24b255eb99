"""Filters over experiments: xmen's ``param_match`` grammar, compiled to safe predicates.

The grammar lives in :mod:`unitrack.persistence.filters`, shared by ``unitrack view``, ``GlobalExperimentManager``
and the web view; this module keeps its names where xmen users import them.

Example:
    >>> keep = compile_filters(["lr<0.1", "0<=depth<4"])
    >>> keep.matches({"lr": 0.01, "depth": 2}), keep.matches({"lr": 0.5, "depth": 2})
    (True, False)
"""

from __future__ import annotations

from unitrack.persistence.filters import Filter, FilterSet, compile_filter, compile_filters

__all__ = ["Filter", "FilterSet", "compile_filter", "compile_filters"]
