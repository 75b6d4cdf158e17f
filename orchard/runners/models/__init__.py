"""Model classes and the request adapter (:mod:`orchard.runners.models.request_adapter`)."""
