"""The Orchard API server: the clarifai ``V2`` gRPC service over the store and services."""
