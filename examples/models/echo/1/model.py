"""Echo: text back in all three call shapes (predict, generate, stream).

``generate`` yields one item per word, each with the whitespace that follows it, so the items
joined give the text back exactly (as a token stream does).
"""

import re
from collections.abc import Iterator

try:  # the official clarifai uploader loads this file with its own ModelClass
    from clarifai.runners.models.model_class import ModelClass
except ImportError:  # Orchard (its runner and its uploader)
    from orchard.authoring import ModelClass


class Echo(ModelClass):
    @ModelClass.method
    def predict(self, text: str) -> str:
        """The text, unchanged."""
        return text

    @ModelClass.method
    def generate(self, text: str) -> Iterator[str]:
        """The text's words, one per item, each with the whitespace after it."""
        yield from re.findall(r"\s*\S+\s*", text)

    @ModelClass.method
    def stream(self, input_iterator: Iterator[str]) -> Iterator[str]:
        """Each incoming item, echoed as it arrives."""
        yield from input_iterator
