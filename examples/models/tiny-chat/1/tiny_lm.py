"""A tiny causal language model in numpy: a byte-level transformer with a KV cache.

What it is, honestly: two pre-norm transformer blocks (8 heads of 32, a GELU MLP of 1,536)
whose weights are random from a fixed seed, with fixed position biases (five heads each look a
set distance back, three average the recent past with an ALiBi decay), and an output layer
fitted at load time by ridge regression (least squares, one matrix solve) over the last block's
features to predict the next byte of ``corpus.txt``, the few dialogues shipped beside it. So it
behaves like a smoothed n-gram model of that corpus: it answers in the corpus's sentences,
sometimes the right one, sometimes spliced, and understands nothing. Load takes about a second
on one core; nothing is downloaded.

Tokens are bytes (0-255) plus ``BOS`` and ``EOS``; a prompt of n bytes is n + 1 tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BOS, EOS = 256, 257
VOCAB = 258
CORPUS = Path(__file__).with_name("corpus.txt")


@dataclass(frozen=True)
class Config:
    dim: int = 256
    heads: int = 8
    layers: int = 2
    hidden: int = 1536
    window: int = 128  # training sequences are this long
    context: int = 1024  # at most this many tokens are attended to
    ridge: float = 1e-5
    sharpness: float = 4.0  # how strictly a one-distance head keeps to its distance
    broad_heads: int = 3
    seed: int = 1234


def encode(text: str) -> list[int]:
    return [BOS, *text.encode("utf-8")]


def _norm(x: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(0.7978845608 * (x + 0.044715 * x**3)))


@dataclass
class Layer:
    qkv: np.ndarray  # (dim, 3 * dim)
    out: np.ndarray  # (dim, dim)
    up: np.ndarray  # (dim, hidden)
    down: np.ndarray  # (hidden, dim)


@dataclass
class Cache:
    """Each layer's keys and values so far: (heads, tokens, head size)."""

    keys: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.keys[0].shape[1] if self.keys else 0


class TinyLM:
    def __init__(self, config: Config | None = None, corpus: str | None = None) -> None:
        self.config = c = config or Config()
        rng = np.random.default_rng(c.seed)
        self.embed = rng.normal(0, 1, (VOCAB, c.dim)).astype(np.float32)
        scale = 1 / math.sqrt(c.dim)
        self.layers = [
            Layer(
                (rng.normal(0, 1, (c.dim, 3 * c.dim)) * scale).astype(np.float32),
                (rng.normal(0, 1, (c.dim, c.dim)) * scale).astype(np.float32),
                (rng.normal(0, 1, (c.dim, c.hidden)) * scale).astype(np.float32),
                (rng.normal(0, 1, (c.hidden, c.dim)) / math.sqrt(c.hidden)).astype(np.float32),
            )
            for _ in range(c.layers)
        ]
        # Position biases: the first heads each look one distance back (head h: h tokens,
        # bias -sharpness * |distance - h|); the others average the recent past with a decay
        # (ALiBi, bias -slope * distance), slower for each.
        sharp = c.heads - c.broad_heads
        self.offsets = np.array([min(h, sharp) for h in range(c.heads)], np.float32)
        self.sharpness = np.array([c.sharpness] * sharp + [0.0] * c.broad_heads, np.float32)
        self.decay = np.array([0.0] * sharp + [0.3 / 3**b for b in range(c.broad_heads)])
        self.decay = self.decay.astype(np.float32)
        self.readout = np.zeros((c.dim + c.hidden + 1, VOCAB), np.float32)
        self.fit(corpus if corpus is not None else CORPUS.read_text())

    # -- the forward pass, over new tokens, with the cache of those before -----------------

    def forward(self, tokens: list[int], cache: Cache | None = None) -> np.ndarray:
        """The features of ``tokens`` (n, dim + hidden + 1: the last block's output, its MLP's
        activations, a constant), attending to ``cache`` and to each other; ``cache`` (when
        given) is extended with their keys and values."""
        c = self.config
        x = self.embed[np.asarray(tokens)]
        start = cache.length if cache is not None else 0
        for i, layer in enumerate(self.layers):
            q, k, v = self._heads(_norm(x) @ layer.qkv)
            if cache is not None:
                if len(cache.keys) <= i:
                    cache.keys.append(k[:, :0])
                    cache.values.append(v[:, :0])
                k = cache.keys[i] = np.concatenate([cache.keys[i], k], axis=1)[:, -c.context :]
                v = cache.values[i] = np.concatenate([cache.values[i], v], axis=1)[:, -c.context :]
            x = x + self._attend(q, k, v, start) @ layer.out
            hidden = _gelu(_norm(x) @ layer.up)
            x = x + hidden @ layer.down
        ones = np.ones((len(tokens), 1), np.float32)
        return np.concatenate([_norm(x), hidden, ones], axis=1)

    def _heads(self, qkv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, heads = qkv.shape[0], self.config.heads
        split = qkv.reshape(n, 3, heads, -1).transpose(1, 2, 0, 3)
        return split[0], split[1], split[2]

    def _attend(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, start: int) -> np.ndarray:
        """Causal attention of ``q`` (new tokens from position ``start``) over ``k``/``v``
        (all tokens kept, the last of them the new ones)."""
        n, total = q.shape[1], k.shape[1]
        query_pos = np.arange(start, start + n)[:, None]
        key_pos = np.arange(start + n - total, start + n)[None, :]
        distance = (query_pos - key_pos).astype(np.float32)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
        offset = np.abs(distance - self.offsets[:, None, None])
        scores = scores - self.sharpness[:, None, None] * offset
        scores = scores - self.decay[:, None, None] * distance
        scores = np.where(distance < 0, -np.inf, scores)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        weights = scores / scores.sum(-1, keepdims=True)
        return (weights @ v).transpose(1, 0, 2).reshape(n, -1)

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features @ self.readout

    # -- fitting the readout -----------------------------------------------------------------

    def fit(self, corpus: str) -> None:
        """The readout that best predicts each next token of ``corpus`` (ridge regression)."""
        window = self.config.window
        inputs, targets = [], []
        for dialogue in corpus.strip().split("\n\n"):
            tokens = [*encode(dialogue.strip() + "\n"), EOS]
            for at in range(0, len(tokens) - 1, window):
                piece = tokens[at : at + window + 1]
                inputs.append(self.forward(piece[:-1]))
                targets.extend(piece[1:])
        features = np.concatenate(inputs).astype(np.float64)
        onehot = np.zeros((len(targets), VOCAB))
        onehot[np.arange(len(targets)), targets] = 1.0
        gram = features.T @ features + self.config.ridge * len(targets) * np.eye(features.shape[1])
        self.readout = np.linalg.solve(gram, features.T @ onehot).astype(np.float32)

    # -- generation --------------------------------------------------------------------------

    def generate(
        self,
        prompt: list[int],
        max_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
        stop: tuple[int, ...] = (EOS,),
    ) -> Iterator[int]:
        """The next tokens after ``prompt``, one at a time, with a KV cache: each step runs
        the one new token. Greedy at temperature 0; ends at a ``stop`` token (not yielded).
        ``EOS`` is never picked unless it stops."""
        rng = np.random.default_rng(seed)
        cache = Cache()
        banned = [BOS] if EOS in stop else [BOS, EOS]
        logits = self.logits(self.forward(prompt, cache))[-1]
        for _ in range(max_tokens):
            token = self._pick(logits, temperature, rng, banned)
            if token in stop:
                return
            yield token
            logits = self.logits(self.forward([token], cache))[-1]

    def _pick(
        self, logits: np.ndarray, temperature: float, rng: np.random.Generator, banned: list[int]
    ) -> int:
        logits = logits.copy()
        logits[banned] = -np.inf
        if temperature <= 0:
            return int(np.argmax(logits))
        scaled = (logits - logits.max()) / (temperature * 0.05)  # readout logits are small
        probs = np.exp(scaled)
        return int(rng.choice(VOCAB, p=probs / probs.sum()))

    def embedding(self, tokens: list[int]) -> np.ndarray:
        """The mean of the tokens' last residual stream, unit length."""
        pooled = self.forward(tokens)[:, : self.config.dim].mean(axis=0)
        return pooled / (np.linalg.norm(pooled) or 1.0)
