"""Model runtime: the authoring API (``models.model_class``, ``utils.data_types``), the wire
conversions (``utils.method_signatures``, ``utils.serializers``, ``utils.legacy``) and the
request adapter a runner calls (``models.dispatch``). Model authors import from
:mod:`orchard.authoring`; numpy and Pillow are optional (``orchard[models]``).
"""
