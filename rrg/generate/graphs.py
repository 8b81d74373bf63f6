"""Greedy decoding whose steps replay as CUDA graphs: the host no longer launches a decode step's kernels.

transformers' `generate` spends ~5.7 of a decode step's ~24 ms (batch 256, one H200) on the host,
launching ~1,000 small kernels one by one while the GPU waits. Here a step (the decoder at one new
position per sequence, the greedy choice, the bookkeeping of finished sequences) is captured once as a
CUDA graph and replayed: one launch a step.

A graph replays fixed shapes on fixed memory, so:
- keys and values live in buffers sized for the longest prompt plus every new token, written in place
  at a position held in a GPU tensor (`GraphCache`); one set of buffers serves every batch of a run;
- a step reads the cache up to the end of a *bucket* (a multiple of `bucket` positions), not up to the
  exact length, with the positions not yet written masked: one graph per bucket and batch size, each
  captured the first time it is needed (the step that needs it runs eagerly, then it is captured);
- the tokens, positions, step counter and finished flags are GPU tensors that the step itself advances;
  the host asks whether every sequence has finished only every `check_every` steps.
Off a GPU the same steps run eagerly: the same arithmetic, which is what the CPU tests check against
`generate`.

What differs from `generate` is only the length attention reads (the bucket's end, masked beyond the
sequence): the same values, summed over a longer row, so greedy texts can differ by rounding where two
tokens' logits are within it (tests/generate/test_graphs.py measures the margin at the first difference).
Only what greedy decoding of this model uses is supported: eos and pad tokens, suppressed tokens and
min_new_tokens; anything else in the generation config is refused with the name of the setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.generation import utils as _generation_utils

from rrg.io import InputError

NON_FINITE_SCORES = (
    "generation: the model's scores hold NaN or inf (a broken adapter or base weights, or an overflow in "
    "this dtype); no report of this batch is written"
)

# Generation-config settings whose logits processors this loop does not apply, with their no-op value.
UNSUPPORTED = {
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "sequence_bias": None,
    "exponential_decay_length_penalty": None,
    "min_length": 0,
    "force_words_ids": None,
    "constraints": None,
    "guidance_scale": None,
    "stop_strings": None,
}


@dataclass(frozen=True)
class GreedyRules:
    """What greedy decoding applies to each step's logits, from the model's generation config."""

    eos: tuple[int, ...]
    pad: int
    suppress: tuple[int, ...] = ()
    min_new_tokens: int = 0

    @classmethod
    def from_config(cls, generation_config, pad_token_id: int | None) -> GreedyRules:
        for name, neutral in UNSUPPORTED.items():
            value = getattr(generation_config, name, neutral)
            if value not in (neutral, None, [], ()) and not (name == "min_length" and value == 0):
                raise InputError(
                    f"generation config sets {name}={value!r}, which decoder 'graphs' does not apply: "
                    "use --decoder generate"
                )
        eos = generation_config.eos_token_id
        eos = tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None else ())
        pad = pad_token_id if pad_token_id is not None else generation_config.pad_token_id
        if pad is None:
            pad = eos[0] if eos else 0
        return cls(
            eos=eos,
            pad=int(pad),
            suppress=tuple(generation_config.suppress_tokens or ()),
            min_new_tokens=int(generation_config.min_new_tokens or 0),
        )


class Cursor:
    """Where a forward writes (positions, a GPU tensor) and how far it reads, shared by a cache's layers.

    Layers hold this rather than their cache: a layer -> cache -> layer cycle would keep the buffers
    alive until the garbage collector ran, tens of GiB past `release()`.
    """

    def __init__(self) -> None:
        self.write_positions: torch.Tensor | None = None
        self.read_len = 0


class GraphLayer(DynamicLayer):
    """A cache layer whose keys/values are written in place at the cursor's write positions (a tensor),
    and read up to the cursor's read length."""

    def __init__(self, cursor: Cursor, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.cursor, self.key_buffer, self.value_buffer = cursor, keys, values

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        positions = self.cursor.write_positions
        self.key_buffer.index_copy_(2, positions, key_states.to(self.key_buffer.dtype))
        self.value_buffer.index_copy_(2, positions, value_states.to(self.value_buffer.dtype))
        self.keys = self.key_buffer[:, :, : self.cursor.read_len]
        self.values = self.value_buffer[:, :, : self.cursor.read_len]
        self.is_initialized = True
        self.dtype, self.device = self.keys.dtype, self.keys.device
        return self.keys, self.values


class GraphCache(DynamicCache):
    """A DynamicCache over preallocated buffers; its cursor is set before each forward."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]):
        super().__init__()
        self.cursor = Cursor()
        self.layers = [GraphLayer(self.cursor, k, v) for k, v in zip(keys, values)]


# The keyword a model's forward (and generate()) takes its KV cache by: `cache` since transformers renamed it
# (the old `past_key_values` still works there, with a deprecation warning each run), `past_key_values` before.
CACHE_KWARG = "cache" if "cache" in getattr(_generation_utils, "ALL_CACHE_NAMES", ()) else "past_key_values"


# Attention implementations that read a boolean 4-D mask (True: attend); "eager" adds a float mask.
BOOLEAN_MASK_ATTENTION = ("sdpa", "sdpa_gqa")


class _Batch:
    """The GPU-side state of one batch size: inputs of the next step, and what was chosen so far."""

    def __init__(self, size: int, capacity: int, max_new_tokens: int, device, pad: int):
        self.size = size
        self.ids = torch.full((size, 1), pad, dtype=torch.long, device=device)
        self.position = torch.zeros((size, 1), dtype=torch.long, device=device)
        self.write_position = torch.zeros(1, dtype=torch.long, device=device)
        self.step = torch.zeros(1, dtype=torch.long, device=device)
        self.unfinished = torch.ones(size, dtype=torch.bool, device=device)
        self.non_finite = torch.zeros(1, dtype=torch.bool, device=device)  # NaN or +inf in any step's scores
        self.tokens = torch.full((size, max_new_tokens), pad, dtype=torch.long, device=device)
        self.valid = torch.zeros((size, capacity), dtype=torch.bool, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}


class GreedyDecoder:
    """Greedy decoding over preallocated buffers, steps replayed as CUDA graphs on a GPU.

    One decoder serves the batches of a run: its buffers grow when a batch needs more (and its graphs
    are then captured again); `release()` frees them.
    """

    def __init__(
        self,
        model,
        *,
        bucket: int = 32,
        check_every: int = 8,
        use_graphs: bool | None = None,
    ):
        if bucket < 1 or check_every < 1:
            raise ValueError("bucket and check_every must be >= 1")
        self.model, self.bucket, self.check_every = model, bucket, check_every
        attention = model.config.get_text_config()._attn_implementation
        if attention not in (*BOOLEAN_MASK_ATTENTION, "eager"):
            raise InputError(
                f"decoder 'graphs' supports attention {', '.join(BOOLEAN_MASK_ATTENTION)} or eager, not "
                f"{attention!r}: use --decoder generate"
            )
        self.additive_mask = attention == "eager"
        embeddings = model.get_input_embeddings().weight
        self.device, self.dtype = embeddings.device, embeddings.dtype
        self.use_graphs = self.device.type == "cuda" if use_graphs is None else use_graphs
        text = model.config.get_text_config()
        self.layers = text.num_hidden_layers
        self.kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
        self.head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        self.capacity = self.max_batch = self.max_new_tokens = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.batches: dict[int, _Batch] = {}
        self.pool = None
        self.rules: GreedyRules | None = None
        self.suppress = self.eos = torch.zeros(0, dtype=torch.long)

    def _set_rules(self, rules: GreedyRules) -> None:
        """Graphs hold the rules they were captured with: other rules need other graphs."""
        if rules == self.rules:
            return
        self.rules = rules
        self.suppress = torch.tensor(rules.suppress, dtype=torch.long, device=self.device)
        self.eos = torch.tensor(rules.eos, dtype=torch.long, device=self.device)
        for state in self.batches.values():
            state.graphs.clear()

    # ------------------------------------------------------------------ buffers

    def release(self) -> None:
        """Free the buffers and graphs."""
        self.batches.clear()
        self.keys, self.values = [], []
        self.capacity = self.max_batch = self.max_new_tokens = 0
        self.pool = None

    def _reserve(self, batch: int, capacity: int, max_new_tokens: int) -> None:
        if batch <= self.max_batch and capacity <= self.capacity and max_new_tokens <= self.max_new_tokens:
            return
        batch, max_new_tokens = max(batch, self.max_batch), max(max_new_tokens, self.max_new_tokens)
        capacity = max(capacity, self.capacity)
        capacity = self.bucket * math.ceil(capacity / self.bucket)
        self.release()  # graphs point at the old buffers
        self.rules = None
        shape = (batch, self.kv_heads, capacity, self.head_dim)
        self.keys = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.layers)]
        self.values = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.layers)]
        self.capacity, self.max_batch, self.max_new_tokens = capacity, batch, max_new_tokens
        if self.use_graphs:
            self.pool = torch.cuda.graph_pool_handle()

    def _batch(self, size: int) -> _Batch:
        if size not in self.batches:
            self.batches[size] = _Batch(size, self.capacity, self.max_new_tokens, self.device, self.rules.pad)
        return self.batches[size]

    def _cache(self, size: int) -> GraphCache:
        return GraphCache([k[:size] for k in self.keys], [v[:size] for v in self.values])

    # ------------------------------------------------------------------ one step

    def _choose(self, logits: torch.Tensor, state: _Batch) -> None:
        """The greedy choice from the last position's logits, and the state advanced past it."""
        scores = logits.float()
        state.non_finite |= (torch.isnan(scores) | torch.isposinf(scores)).any()
        if self.suppress.numel():
            scores.index_fill_(1, self.suppress, -math.inf)
        if self.rules.min_new_tokens and self.eos.numel():
            early = state.step < self.rules.min_new_tokens  # [1]
            eos_scores = scores.index_select(1, self.eos)
            scores.index_copy_(1, self.eos, torch.where(early, -math.inf, eos_scores))
        chosen = torch.where(state.unfinished, scores.argmax(-1), self.rules.pad)
        state.tokens.index_copy_(1, state.step, chosen[:, None])
        if self.eos.numel():
            state.unfinished &= ~torch.isin(chosen, self.eos)
        state.ids.copy_(chosen[:, None])
        state.step += 1

    def _step(self, state: _Batch, cache: GraphCache, read_len: int) -> None:
        """Feed each sequence's last token at the write position, choose the next."""
        state.valid.index_fill_(1, state.write_position, True)
        cache.cursor.write_positions, cache.cursor.read_len = state.write_position, read_len
        mask = state.valid[:, None, None, :read_len]
        if self.additive_mask:
            mask = torch.zeros(mask.shape, dtype=self.dtype, device=self.device).masked_fill(
                ~mask, torch.finfo(self.dtype).min
            )
        output = self.model(
            input_ids=state.ids,
            attention_mask=mask,
            position_ids=state.position,
            use_cache=True,
            logits_to_keep=1,
            **{CACHE_KWARG: cache},
        )
        self._choose(output.logits[:, -1], state)
        state.write_position += 1
        state.position += 1

    def _replay(self, state: _Batch, cache: GraphCache, read_len: int) -> None:
        graph = state.graphs.get(read_len)
        if graph is not None:
            graph.replay()
            return
        self._step(state, cache, read_len)  # this step runs eagerly; later ones of its bucket replay
        if not self.use_graphs:
            return
        held = (state.ids, state.position, state.write_position, state.step, state.unfinished, state.non_finite)
        saved = [t.clone() for t in held]
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                self._step(state, cache, read_len)
        except RuntimeError as e:  # a kernel that cannot be captured (some quantised matmuls)
            print(f"warning: decode steps cannot be captured as CUDA graphs ({str(e)[:120]}): running eagerly")
            self.use_graphs = False
            torch.cuda.synchronize()
        # Capturing runs no kernels; restoring the state keeps it exact whatever a backend ran eagerly.
        for tensor, value in zip(held, saved):
            tensor.copy_(value)
        if self.use_graphs:
            state.graphs[read_len] = graph

    # ------------------------------------------------------------------ a batch

    @torch.inference_mode()
    def generate(self, inputs, max_new_tokens: int, rules: GreedyRules) -> torch.Tensor:
        """[batch, n <= max_new_tokens] new tokens of a left-padded batch (pad after a sequence ends)."""
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        size, length = input_ids.shape
        self._reserve(size, length + max_new_tokens, max_new_tokens)
        self._set_rules(rules)
        state, cache = self._batch(size), self._cache(size)
        state.valid.zero_()
        state.valid[:, :length] = attention_mask.bool()
        state.tokens.fill_(self.rules.pad)
        state.unfinished.fill_(True)
        state.non_finite.zero_()
        state.step.zero_()
        # Positions count each sequence's own tokens (left padding takes none), as generate() counts them.
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        cache.cursor.write_positions = torch.arange(length, device=self.device)
        cache.cursor.read_len = length
        extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        output = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **extra,
            **{CACHE_KWARG: cache},
        )
        self._choose(output.logits[:, -1], state)
        state.position.copy_(positions[:, -1:] + 1)
        state.write_position.fill_(length)
        steps = 1
        while steps < max_new_tokens:
            if steps % self.check_every == 0 and not bool(state.unfinished.any()):
                break
            write = length + steps - 1
            read_len = min(self.capacity, self.bucket * math.ceil((write + 1) / self.bucket))
            self._replay(state, cache, read_len)
            steps += 1
        if bool(state.non_finite):
            raise InputError(NON_FINITE_SCORES)
        return state.tokens[:, :steps].clone()
