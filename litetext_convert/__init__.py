"""litetext: convert SAM3-LiteText checkpoints to Hugging Face Transformers and prove parity."""

__version__ = "0.1.0"
