"""Model code may import the value codec by this path, as the official SDK's
``clarifai.runners.utils.serializers``; it lives in :mod:`orchard.codec.serializers`."""

from orchard.codec.serializers import *  # noqa: F403
