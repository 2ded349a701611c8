"""The names of what litetext writes into a converted folder, and the closed vocabulary of the
folder's content files (what a parity record binds by digest and what push publishes)."""

from __future__ import annotations

import re

CONVERSION_RECORD = "conversion_record.json"
PARITY_DIR = "parity"
LEGACY_PARITY_RECORD = "parity_record.json"  # one record per folder (litetext 0.1 before records per run): still read
CARD = "README.md"
CONFIG = "config.json"
MEMO_DIR = ".litetext"
SOURCE_MEMO = f"{MEMO_DIR}/source.json"  # hidden: never published (a local path stays on this machine)
DEFAULT_PROMPT_SET = "default"  # seeded token ids, no user prompts
TOOL_NAME = "litetext"

# The files a conversion writes that make up the model: weights, their index, the configs, the
# tokenizer and the processor. A closed list, so a user's notes.txt never becomes "verified content"
# even if its name is added to the conversion record by hand.
CONTENT_NAME = re.compile(
    r"model(-\d{5}-of-\d{5})?\.safetensors|model\.safetensors\.index\.json|config\.json|generation_config\.json"
    r"|tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|added_tokens\.json|vocab\.json|merges\.txt"
    r"|chat_template\.jinja|[a-z_]*processor_config\.json"
)
# An ONNX export's graphs and their manifest, in the onnx/ sub-folder (litetext_convert/onnx).
ONNX_DIR = "onnx"
ONNX_NAME = re.compile(r"[A-Za-z0-9_+-]+\.onnx(\.data)?|graphs\.json")
RECORD_NAME = re.compile(r"[A-Za-z0-9_.+-]+\.json")  # parity/<key>.json and .litetext/source.json

# Bounds on what litetext reads back from a folder: its own JSON files are a few kB to a few MB.
MAX_JSON_BYTES = 64 << 20


def is_content_name(name: str) -> bool:
    return CONTENT_NAME.fullmatch(name) is not None
