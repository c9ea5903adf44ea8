"""Choices of the training layer that the config schema checks against, importable without Lightning.

``adapt.schema`` validates ``train`` command lines before torch and Lightning are imported, so
the names live here; ``adapt.training.callbacks`` implements them.
"""

from __future__ import annotations

#: ``logger.kind``: where the run's metrics go (``adapt.training.callbacks.build_logger``).
LOGGERS = ("csv", "wandb")
