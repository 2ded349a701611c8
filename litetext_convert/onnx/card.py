"""The model card's wording for an ONNX folder (configs/targets/onnx.toml [card])."""

from __future__ import annotations

from litetext_convert.paths import read_config


def card_overview(context: int) -> str:
    """What this repository holds, after the family's own overview."""
    return read_config("targets/onnx.toml")["card"]["overview"].format(context=context)


def card_usage(repo_id: str) -> str:
    """The torch-free usage section: onnxruntime, numpy, tokenizers, Pillow."""
    card = read_config("targets/onnx.toml")["card"]
    return f"## Usage\n\n```bash\n{card['install']}\n```\n\n```python\n{card['usage'].format(repo_id=repo_id)}```"
