"""Writing a converted folder: shards, processor, the atomic folder swap, the convert pipeline."""
