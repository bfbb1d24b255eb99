"""xmen's experiments on unitrack: ``# @p`` parameters, ``params.yml`` folders and trials in a backend.

``Experiment`` (:mod:`unitrack.experiment.experiment`) is the class API; ``Root`` and
``functional_experiment`` (:mod:`unitrack.experiment.functional`) the functional API; xmen's helpers live in
:mod:`unitrack.experiment.utils`.
"""

from __future__ import annotations

from unitrack.experiment.config import GlobalExperimentManager
from unitrack.experiment.experiment import Experiment
from unitrack.experiment.functional import Root, autodoc, functional_experiment, read_comments

__all__ = [
    "Experiment",
    "GlobalExperimentManager",
    "Root",
    "autodoc",
    "functional_experiment",
    "read_comments",
]
