"""Model code may import the value codec by this path, as the official SDK's
``clarifai.runners.utils.data_types``; it lives in :mod:`orchard.codec.data_types`."""

from orchard.codec.data_types import *  # noqa: F403
