"""Generation: batched reports (CUDA-graph decoding), the eval run over a split, its shards, the Python API."""
