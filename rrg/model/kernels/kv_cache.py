"""A dynamic KV cache that does not copy itself at every decode step.

transformers' DynamicCache appends a step's keys and values with `torch.cat`, which copies the
whole cache, in every layer, at every step: 7 of the 25 ms of a decode step at batch 128 on an H100
(scripts/benchmark.py's gen_diagnose profile). `PreallocatedCache` is a DynamicCache whose layers
keep their keys and values in buffers sized for the whole generation (prompt + max_new_tokens): a
step writes its position, and the layer's keys/values are the filled prefix, a view. Attention
reads exactly what it read before; unlike a static cache there are no empty positions to mask, and
nothing is compiled.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class PreallocatedLayer(DynamicLayer):
    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity  # positions per sequence; more are allocated if ever needed
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.get_seq_length()
        end = start + key_states.shape[-2]
        if not self._holds_prefix(end):
            # First step, or keys/values were replaced (beam reordering, batch selection): adopt them.
            self.key_buffer = self._buffer(self.keys, key_states, start, end)
            self.value_buffer = self._buffer(self.values, value_states, start, end)
        self.key_buffer[:, :, start:end] = key_states
        self.value_buffer[:, :, start:end] = value_states
        self.keys = self.key_buffer[:, :, :end]
        self.values = self.value_buffer[:, :, :end]
        return self.keys, self.values

    def _holds_prefix(self, end: int) -> bool:
        """Whether keys/values are still views of the start of the buffers, with room up to `end`."""
        buffers = (self.key_buffer, self.value_buffer)
        if any(b is None or b.shape[2] < end for b in buffers):
            return False
        return all(
            t.numel() > 0 and t.data_ptr() == b.data_ptr() and t.shape[:2] == b.shape[:2]
            for t, b in zip((self.keys, self.values), buffers)
        )

    def _buffer(self, held: torch.Tensor, new: torch.Tensor, start: int, end: int) -> torch.Tensor:
        batch, heads, _, dim = new.shape
        buffer = new.new_empty(batch, heads, max(self.capacity, end), dim)
        if start:
            buffer[:, :, :start] = held
        return buffer


class PreallocatedCache(DynamicCache):
    """A DynamicCache of `PreallocatedLayer`s with room for `capacity` positions per sequence."""

    def __init__(self, num_layers: int, capacity: int):
        super().__init__()
        self.layers = [PreallocatedLayer(capacity) for _ in range(num_layers)]

    @classmethod
    def for_generation(cls, model, prompt_length: int, max_new_tokens: int) -> PreallocatedCache:
        """Room for the prompt and every new token, in each of the model's decoder layers."""
        layers = model.config.get_text_config().num_hidden_layers
        return cls(layers, prompt_length + max_new_tokens)
