"""The model runtime: what runs inside a model version's environment.

- the authoring API (``models.model_class``, ``utils.data_types``) and the value codec
  (``utils.method_signatures``, ``utils.serializers``, ``utils.legacy``); model authors import
  from :mod:`orchard.authoring`; numpy and Pillow are optional (``orchard[models]``);
- loading a package's model class (``models.loading``) and the request adapter that calls its
  methods for V2 requests (``models.request_adapter``, ``adapters``, ``batching``);
- the runner process: ``command`` (the one builder of its command line, for every place that
  starts one), ``serve`` (its parser and main), ``runner`` (connecting out and
  reconnecting), ``session`` and ``items`` (serving the items of one open work stream, see
  :mod:`orchard.work_protocol`), ``link`` (the local link), ``health`` and ``threads``.
"""
