"""Token streamer: imitates an LLM, with no weights and the same answer every time.

The completion is derived from the prompt alone: a random generator seeded with the prompt's
SHA-256 picks words from the prompt and from a small vocabulary. Tokens are words with a
leading space (as LLM tokenizers split text), so joining the tokens gives the completion.

``generate`` waits ``delay_ms`` before each token, to imitate decoding time. Its default is
20 ms; set the environment variable TOKEN_STREAMER_DELAY_MS where the model is loaded (the
runner, or the uploader for the default shown in the method signature) to change it.
``predict`` returns the whole completion at once, without delays. Both report token counts
(prompt words, completion tokens so far) with ``set_output_context``.
"""

import hashlib
import os
import random
import time
from collections.abc import Iterator

try:  # the official clarifai uploader loads this file with its own ModelClass
    from clarifai.runners.models.model_class import ModelClass
    from clarifai.runners.utils.data_utils import Param
except ImportError:  # Orchard (its runner and its uploader)
    from orchard.authoring import ModelClass, Param

DEFAULT_DELAY_MS = float(os.environ.get("TOKEN_STREAMER_DELAY_MS", "20"))
VOCABULARY = (
    *("the", "a", "model", "answer", "token", "stream", "orchard", "server", "request"),
    *("arrives", "streams", "waits", "returns", "again", "slowly", "today", "and", "then"),
)


def completion_tokens(prompt: str, max_tokens: int) -> list[str]:
    """The completion of ``prompt``: ``max_tokens`` tokens, the same for the same prompt."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    words = [*prompt.split(), *VOCABULARY]
    return [" " + rng.choice(words) for _ in range(max_tokens)]


class TokenStreamer(ModelClass):
    @ModelClass.method
    def predict(self, prompt: str, max_tokens: int = 32) -> str:
        """The whole completion of the prompt."""
        tokens = completion_tokens(prompt, int(max_tokens))
        self.set_output_context(prompt_tokens=len(prompt.split()), completion_tokens=len(tokens))
        return "".join(tokens)

    @ModelClass.method
    def generate(
        self,
        prompt: str,
        max_tokens: int = 32,
        delay_ms: float = Param(
            default=DEFAULT_DELAY_MS,
            description="milliseconds to wait before each token (imitates decoding time)",
            min_value=0.0,
        ),
    ) -> Iterator[str]:
        """The completion of the prompt, one token per item."""
        delay = float(delay_ms) / 1000
        prompt_tokens = len(prompt.split())
        for count, token in enumerate(completion_tokens(prompt, int(max_tokens)), start=1):
            time.sleep(delay)
            self.set_output_context(prompt_tokens=prompt_tokens, completion_tokens=count)
            yield token
