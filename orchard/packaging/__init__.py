"""Model packages: a folder with ``config.yaml``, ``requirements.txt`` and ``1/model.py``.

``config`` is its schema, ``package`` reads, checks, packs and unpacks one, and ``inspect``
collects its method signatures in a separate interpreter (loading the class is the model
runtime's: :mod:`orchard.runners.models.loading`). The SDK uses them before uploading and the
server again when it builds. ``localtest`` calls each method of a package inside its built
environment (``orchard model local-test``).
"""

from orchard.runners.models.loading import MODEL_FILE  # the runtime loads the class from there

__all__ = ["CONFIG", "MODEL_FILE", "REQUIREMENTS"]

CONFIG = "config.yaml"
REQUIREMENTS = "requirements.txt"
