"""Model runtime: the authoring API (``models.model_class``, ``utils.data_types``), the wire
conversions (``utils.method_signatures``, ``utils.serializers``, ``utils.legacy``) and the
request adapter a runner calls (``models.dispatch``). A replica's command line is built by
``command`` (for every place that starts one) and parsed by ``serve``. Model authors import from
:mod:`orchard.authoring`; numpy and Pillow are optional (``orchard[models]``).
"""
