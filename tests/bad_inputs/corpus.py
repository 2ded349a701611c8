"""Bad inputs for tests/bad_inputs/ (one module per command).

Every builder writes one file, starting from the tiny synthetic checkpoint in the exact upstream
layout, so each bad input differs from a good one in exactly the way its name says.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
from pathlib import Path

import torch

from litetext_convert.plan.infer import TEXT, TRUNK
from litetext_convert.synthetic import builder as synthetic

TINY_HEADS = synthetic.TINY_TEXT_PRESETS["s0"].heads  # tiny head dim is not 64: --num-heads is needed
QKV_KEY = TEXT + "encoder.transformer.1.pre_norm_mha.1.qkv_proj.weight"
POS_KEY = TEXT + "encoder.positional_embedding.pos_embed.pos_embed"
FINAL_NORM_KEY = TEXT + "encoder.final_layer_norm.weight"

State = dict[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------
# Evidence that nothing was touched or left behind


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def listing(folder: Path) -> set[str]:
    return {entry.name for entry in Path(folder).iterdir()} if Path(folder).is_dir() else set()


def partial_leftovers(folder: Path) -> list[str]:
    return sorted(name for name in listing(folder) if ".partial-" in name or ".old-" in name)


# ---------------------------------------------------------------------------------------------
# Checkpoint builders


def tiny_state(context: int = 16, pos_rows: int | None = None, dtype: torch.dtype = torch.float32) -> State:
    text = synthetic.tiny_text("s0", context, pos_rows)
    return synthetic.build_state_dict(text, synthetic.TINY_DETECTOR, dtype=dtype)


def save_wrapped(path: Path, state: dict, wrapper: str | None = "model") -> Path:
    """As the released files are saved: `{"model": state_dict}` in torch's zip format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({wrapper: state} if wrapper else state, path)
    return path


def save_safetensors(path: Path, state: State) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    return path


def truncate_copy(source: Path, target: Path, keep_bytes: int) -> Path:
    target.write_bytes(Path(source).read_bytes()[:keep_bytes])
    return target


def random_bytes_file(path: Path, size: int, seed: int = 0) -> Path:
    data = bytearray(random.Random(seed).randbytes(size))
    data[0] = 0x42  # neither a zip, a pickle PROTO, nor a plausible safetensors header
    path.write_bytes(bytes(data))
    return path


class _CreatesMarker:
    """Unpickling this calls open(marker, "w"): the file exists afterwards if code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def code_executing_torch_file(path: Path, marker: Path) -> Path:
    """A torch zip whose pickle would call open(marker, "w") on a full (unsafe) load."""
    torch.save({"model": {"x": torch.zeros(1)}, "payload": _CreatesMarker(marker)}, path)
    return path


def code_executing_legacy_pickle(path: Path, marker: Path) -> Path:
    """A bare protocol-2 pickle (sniffed as torch's legacy format) with the same payload."""
    path.write_bytes(pickle.dumps(_CreatesMarker(marker), protocol=2))
    return path


def ddp_prefixed(state: State) -> State:
    return {f"module.{key}": value for key, value in state.items()}


def with_non_finite(state: State) -> State:
    poisoned = dict(state)
    table = poisoned[FINAL_NORM_KEY].clone()
    table[0], table[1] = float("nan"), float("inf")
    poisoned[FINAL_NORM_KEY] = table
    return poisoned


def plain_sam3(state: State) -> State:
    """SAM3's own 24-layer CLIP text encoder keys where LiteText's student would be."""
    vision = {key: value for key, value in state.items() if not key.startswith(TEXT)}
    clip = {
        TEXT + "encoder.token_embedding.weight": torch.zeros(49408, 8),
        TEXT + "encoder.transformer.resblocks.0.attn.in_proj_weight": torch.zeros(24, 8),
        TEXT + "encoder.ln_final.weight": torch.ones(8),
        TEXT + "resizer.weight": torch.zeros(8, 8),
    }
    return {**vision, **clip}


def student_vision(state: State, trunk_key: str) -> State:
    """A LiteText text encoder beside a student (non-ViT) vision trunk."""
    kept = {key: value for key, value in state.items() if not key.startswith(TRUNK)}
    return {**kept, TRUNK + trunk_key: torch.zeros(16, 3, 3, 3)}


def sam3_1(state: State) -> State:
    """A plain SAM 3.1 file: SAM3's CLIP text encoder and the Object Multiplex tracker (tracker.model.*)."""
    return {**plain_sam3(state), "tracker.model.output_valid_embed": torch.zeros(16, 8)}


def without(state: State, predicate) -> State:
    return {key: value for key, value in state.items() if not predicate(key)}


def with_extra_key(state: State, key: str) -> State:
    return {**state, key: torch.zeros(3)}


def with_wrong_qkv(state: State) -> State:
    rows, width = state[QKV_KEY].shape
    return {**state, QKV_KEY: torch.zeros(rows, width + 4)}


# ---------------------------------------------------------------------------------------------
# Crafted checkpoints (issue 15): each reached an internal error, a silent conversion or a hang

EMBEDDING_KEY = TEXT + "encoder.embedding_layer.weight"
PATCH_KEY = TRUNK + "patch_embed.proj.weight"
RPB_KEYS = [f"detector.transformer.decoder.boxRPB_embed_{axis}.layers.1.{kind}" for axis in "xy" for kind in ("weight", "bias")]
FORGED_KEY = "detector.\x1b[31mred\nerror: forged second line"


def with_tensor(state: State, key: str, make) -> State:
    return {**state, key: make(state[key])}


def with_non_string_key(state: State) -> State:
    return {**state, 7: torch.zeros(2), ("a", 1): torch.zeros(2)}


def with_empty_rope_tables(state: State) -> State:
    return {**state, **{key: value[:0] for key, value in state.items() if key.endswith("attn.freqs_cis")}}


def with_decoder_heads(state: State, heads: int) -> State:
    """The decoder's box-RPB MLP emits one bias per head: `heads` rows instead of the real count."""
    return {**state, **{key: torch.zeros(heads, *state[key].shape[1:]) for key in RPB_KEYS}}


def save_meta(path: Path, state: State) -> Path:
    meta = {key: torch.empty(value.shape, dtype=value.dtype, device="meta") if key == FINAL_NORM_KEY else value
            for key, value in state.items()}
    return save_wrapped(path, meta)


def disproportionate_pickle(path: Path, state: State, junk_bytes: int = 20 << 20) -> Path:
    """A torch zip whose pickle holds a `junk_bytes` string, recompressed: a small file whose
    unpickling would need far more memory than its size."""
    import zipfile

    plain = path.with_suffix(".plain")
    torch.save({"model": state, "notes": "x" * junk_bytes}, plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info.filename))
    plain.unlink()
    return path


def fifo(path: Path) -> Path:
    if not path.exists():
        os.mkfifo(path)
    return path
