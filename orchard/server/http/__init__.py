"""Orchard's HTTP front door: one listener in the server's process and event loop.

It serves the REST/JSON view of the V2 RPCs (``/v2/...``), the OpenAI-compatible API
(``/v2/ext/openai/v1/...``), Prometheus ``/metrics`` and the dashboard (``/``). Every route
calls the same handlers as gRPC through :class:`orchard.server.rpc.GrpcAdapter` (``responses``,
``serve_unary``, ``serve_stream``), so authentication, validation, isolation, the cold-start
hold, backpressure and cancellation are the same whatever carried the call.
"""
