"""The text family: a decoder-only transformer in the GPT-2 layout over byte or BPE tokens (issue 23).

config.py (GPTConfig, presets), networks.py (the transformer and its key/value cache), model.py (training on
next-token prediction, generation with temperature, top-k and top-p).
"""

from genlab.models.gpt.config import GPTConfig
from genlab.models.gpt.model import GPTModel

__all__ = ["GPTConfig", "GPTModel"]
