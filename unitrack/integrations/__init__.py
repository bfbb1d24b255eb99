"""Drop-in adapters for training frameworks; each writes one trial per run through a unitrack backend.

- :mod:`unitrack.integrations.lightning` (also ``unitrack.lightning``): ``UnitrackLogger`` and the
  Monitor-spec ``MonitorLogger`` for Lightning 2.x;
- :mod:`unitrack.integrations.transformers`: ``UnitrackCallback`` for the Hugging Face ``Trainer``;
- :mod:`unitrack.integrations.keras`: ``UnitrackCallback`` for Keras 3 (any backend);
- :mod:`unitrack.integrations.optuna`: ``UnitrackCallback`` recording every Optuna trial.

Importing this package loads no framework; each module imports its own when it is imported.
:mod:`unitrack.integrations.run` holds what they share (the trial's lifecycle, plain parameters, ranks).
"""
