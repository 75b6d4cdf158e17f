"""All three call shapes, and a generate that holds after its first output until a file
exists (so that a test can cancel it mid-call)."""

import os
import time
from collections.abc import Iterator
from pathlib import Path

from clarifai.runners.models.model_class import ModelClass


class Served(ModelClass):
    @ModelClass.method
    def predict(self, text: str) -> str:
        return text.upper()

    @ModelClass.method
    def generate(self, text: str) -> Iterator[str]:
        yield from text.split()

    @ModelClass.method
    def stream(self, input_iterator: Iterator[str]) -> Iterator[str]:
        for text in input_iterator:
            yield text.upper()

    @ModelClass.method
    def hold(self, text: str) -> Iterator[str]:
        yield text
        gate = Path(os.environ["SERVED_GATE"])
        while not gate.exists():
            time.sleep(0.01)
        yield "released"
