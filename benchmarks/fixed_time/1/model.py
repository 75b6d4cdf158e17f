"""A model whose every call takes the same time, for the fairness benchmark: with few slots and
many callers, how long a call takes is how long it waited for a slot."""

import asyncio

from orchard.authoring import ModelClass

SERVICE_SECONDS = 0.05  # benchmarks/fairness.py gives its baseline the same


class FixedTime(ModelClass):
    @ModelClass.method
    async def predict(self, text: str) -> str:
        await asyncio.sleep(SERVICE_SECONDS)
        return text
