"""The corpus as bytes: a byte-level tokenizer (vocab 256), a train/held-out split, and
batches that depend only on ``(seed, step)`` (so a resumed run sees the same data).

>>> tokens = encode("To be")
>>> tokens.tolist(), decode(tokens)
([84, 111, 32, 98, 101], 'To be')
"""

from __future__ import annotations

import pathlib

import numpy as np

CORPUS = pathlib.Path(__file__).parent / "data" / "shakespeare.txt"
VOCAB_SIZE = 256


def encode(text: str) -> np.ndarray:
    """UTF-8 bytes of ``text`` as a uint8 array (the token ids)."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def decode(tokens) -> str:
    """The text of byte ids (invalid UTF-8 sequences become U+FFFD)."""
    return bytes(np.asarray(tokens, dtype=np.uint8).tolist()).decode("utf-8", errors="replace")


def load_corpus(path: pathlib.Path | str = CORPUS, held_out_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """``(train, held_out)`` byte arrays: the last ``held_out_fraction`` of the file is held out."""
    if not 0 < held_out_fraction < 1:
        raise ValueError(f"load_corpus: held_out_fraction must be in (0, 1), got {held_out_fraction}")
    data = np.fromfile(path, dtype=np.uint8)
    split = int(len(data) * (1 - held_out_fraction))
    return data[:split], data[split:]


def batch_at(data: np.ndarray, step: int, batch_size: int, seq_len: int, seed: int = 0,
             rows: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, targets)`` int32 ``[batch_size, seq_len]`` windows, a function of ``(seed, step)`` only.

    ``targets`` is ``inputs`` shifted by one byte. ``rows`` builds only those rows of the
    batch (the same windows the whole batch has there): in a multi-process run each
    process reads just its own shard of the global batch.
    """
    if len(data) <= seq_len + 1:
        raise ValueError(f"batch_at: {len(data)} tokens are too few for windows of seq_len={seq_len}")
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(data) - seq_len - 1, size=batch_size)[rows]
    windows = np.stack([data[s:s + seq_len + 1] for s in starts]).astype(np.int32)
    return windows[:, :-1], windows[:, 1:]


def eval_batches(data: np.ndarray, batch_size: int, seq_len: int, num_batches: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``num_batches`` fixed held-out batches of consecutive, non-overlapping windows."""
    windows = (len(data) - 1) // seq_len
    if windows < batch_size * num_batches:
        raise ValueError(f"eval_batches: the held-out split has {windows} windows of {seq_len}, fewer than "
                         f"{batch_size} x {num_batches}")
    out = []
    for b in range(num_batches):
        starts = [(b * batch_size + i) * seq_len for i in range(batch_size)]
        w = np.stack([data[s:s + seq_len + 1] for s in starts]).astype(np.int32)
        out.append((w[:, :-1], w[:, 1:]))
    return out


__all__ = ["CORPUS", "VOCAB_SIZE", "encode", "decode", "load_corpus", "batch_at", "eval_batches"]
