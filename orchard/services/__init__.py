"""Business rules, one module per resource noun, and the I/O the server and orchestrator share.

The noun modules (``apps``, ``compute_clusters``, ``deployments``, ``logs``, ``models``,
``nodepools``, ``quotas``, ``runners``, ``users``) are sync functions that take a database
session and the owner's user id, enforce the rules and return store rows; the gRPC layer
converts. Beside them: ``packages`` keeps package files on disk (by sha256), ``builds`` builds
environments with uv in subprocesses (async), ``fetch`` fetches URL inputs over the network
(async, aiohttp) under its policy, and ``common`` holds what the noun modules share.
"""
