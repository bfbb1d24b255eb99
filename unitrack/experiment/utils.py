"""xmen's ``utils`` names, re-exported from the modules that own them (``xmen.utils`` → here).

- YAML and params files: :mod:`unitrack.experiment.paramfile`
- machine, git and version information, launchers: :mod:`unitrack.experiment.meta`
- ``# @p`` parameters and docstrings: :mod:`unitrack.experiment.params`
"""

from __future__ import annotations

from unitrack.errors import IncompatibleYmlException
from unitrack.experiment.meta import get_git, get_meta, get_run_script, get_size, get_version
from unitrack.experiment.paramfile import (
    DATE_FORMAT,
    commented_to_py,
    dic_from_yml,
    dic_to_yaml,
    dics_to_pandas,
    flatten,
    load_param,
    load_params,
    save_param,
)
from unitrack.experiment.params import TypedMeta, get_attribute_helps, get_docs

__all__ = [
    "DATE_FORMAT",
    "IncompatibleYmlException",
    "TypedMeta",
    "commented_to_py",
    "dic_from_yml",
    "dic_to_yaml",
    "dics_to_pandas",
    "flatten",
    "get_attribute_helps",
    "get_docs",
    "get_git",
    "get_meta",
    "get_run_script",
    "get_size",
    "get_version",
    "load_param",
    "load_params",
    "save_param",
]
