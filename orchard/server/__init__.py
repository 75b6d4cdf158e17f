"""The Orchard API server: the clarifai ``V2`` gRPC service over the store and services.

``app`` assembles it (gRPC, the runners' local link, the build queue, the dispatcher, the
orchestrator, ``/metrics`` on its own port); ``rpc`` authenticates, runs handlers and maps
errors; one module per resource noun holds that noun's handlers; ``work`` serves the runners'
work streams; ``predictions`` the prediction calls.
"""
