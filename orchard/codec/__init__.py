"""The value codec: how a model method's Python values travel in V2 messages.

``data_types`` holds the value types (``Text``, ``Image``, ``Audio``, ``Video``, ``Concept``,
``Region``, ``Frame``, ``NamedFields`` ...) and ``serializers`` turns values into ``Data`` fields
and back, by the official SDK's wire conventions. Neutral ground: the SDK and the CLI encode
arguments and decode answers with it, and the model runtime inside a replica decodes arguments
and encodes results with it; it imports nothing of Orchard's but itself.
"""
