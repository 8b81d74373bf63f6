"""`sdpa_gqa`: transformers' SDPA attention, with decode steps that never copy the key/value heads.

Mistral-7B has 32 query heads sharing 8 key/value heads. Whenever a mask reaches attention (a
left-padded batch, a static KV cache: both at generation), transformers' SDPA path copies every
key and value head 4 times (`repeat_kv`) before calling the kernel, because PyTorch's masked SDPA
kernels do not take grouped heads. At a decode step that copy is 4x the whole KV cache, written and
read again, in every layer (a padded batch of 128 on an H100: 86.8 ms a step with it, 44.5 without).

A decode step has one query token, so the 4 query heads of a group can instead be laid out as 4
query rows of that group's key/value head: the same attention, on the cache as it is. Everything
else (prompts, training, the vision tower) goes through transformers' own `sdpa_attention_forward`.
The name is registered with transformers on import, with the mask builder of "sdpa"; load a model
with `attn_implementation=ATTENTION`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "sdpa_gqa"


def sdpa_gqa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [B, H, Q, D]
    key: torch.Tensor,  # [B, H_kv, K, D]
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,  # [B, 1, Q, K], shared by all heads; or None
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    groups = getattr(module, "num_key_value_groups", 1)
    one_query = query.shape[2] == 1
    shared_mask = attention_mask is None or attention_mask.shape[1] == 1
    if groups == 1 or not one_query or not shared_mask or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    batch, heads, _, dim = query.shape
    # Query heads h = g * groups + r share key/value head g (repeat_kv's order): row r of group g.
    rows = query.reshape(batch, heads // groups, groups, dim)
    # The mask's single query row broadcasts over the group's rows; nothing is causal within a step.
    output = F.scaled_dot_product_attention(
        rows, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling
    )
    return output.reshape(batch, 1, heads, dim), None  # [B, Q=1, H, D], as sdpa_attention_forward returns


def avoid_cudnn_attention() -> None:
    """Turn PyTorch's cuDNN attention off (process-wide), so SDPA takes its flash kernel instead.

    cuDNN builds an execution graph for every new sequence length (hundreds of ms each, a CPU cost
    the GPU waits for), and here the length changes with every batch. Attention is ~1% of a training
    step's GPU time, so the flash kernel costs nothing measurable there.
    """
    torch.backends.cuda.enable_cudnn_sdp(False)


AttentionInterface.register(ATTENTION, sdpa_gqa_attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)
