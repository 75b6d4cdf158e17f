"""A no-op model for the data-plane benchmark: answers as fast as a model can."""

from collections.abc import Iterator

from orchard.authoring import ModelClass

CHUNK = "x" * 300


class Noop(ModelClass):
    @ModelClass.method
    async def predict(self, text: str) -> str:
        return text

    @ModelClass.method
    async def generate(self, text: str, chunks: int = 1000) -> Iterator[str]:
        for _ in range(chunks):
            yield CHUNK

    @ModelClass.method
    async def stream(self, input_iterator: Iterator[str]) -> Iterator[str]:
        async for text in input_iterator:
            yield text
