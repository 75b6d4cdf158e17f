"""Model packages: a folder with ``config.yaml``, ``requirements.txt`` and ``1/model.py``.

``config`` is its schema, ``package`` reads, checks, packs and unpacks one, and ``inspect``
loads its model class to collect method signatures. The SDK uses them before uploading and the
server again when it builds.
"""

CONFIG = "config.yaml"
REQUIREMENTS = "requirements.txt"
MODEL_FILE = "1/model.py"
