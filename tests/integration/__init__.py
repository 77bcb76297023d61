"""Integration tier: namax on unmodified third-party models (transformers' Flax GPT-2,
Equinox, Flax NNX), randomly initialised, tiny shapes, no downloads."""
