"""cox's ``utils`` names, re-exported from the modules that own them."""

from __future__ import annotations

from unitrack.store.fs import has_tensorboard, mkdirp
from unitrack.store.params import Parameters, consistent, override_json
from unitrack.store.serialization import obj_to_string, string_to_obj

__all__ = [
    "Parameters",
    "consistent",
    "has_tensorboard",
    "mkdirp",
    "obj_to_string",
    "override_json",
    "string_to_obj",
]
