"""Models written in namax, with their Hugging Face checkpoint converters.

>>> from namax.models import gpt2
>>> gpt2.GPT2Config(n_layer=2).Layers
Axis('layers', 2)
"""

from . import gpt2

__all__ = ["gpt2"]
