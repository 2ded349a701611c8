"""Config level: every value of the folder's config.json that changes the computation, against the
config litetext builds for the original (plan/hf_config.py, configs/detector.toml)."""

from __future__ import annotations

from pathlib import Path

from litetext_convert.audit.findings import Finding
from litetext_convert.errors import LitetextError
from litetext_convert.plan.hf_config import build_config
from litetext_convert.plan.prepare import Prepared

# Fields that do not change what a model in eval mode computes.
NOT_COMPUTATIONAL = {
    "transformers_version", "architectures", "_name_or_path", "dtype", "torch_dtype", "initializer_range",
    "dropout", "attention_dropout", "hidden_dropout", "output_hidden_states", "output_attentions", "return_dict",
    "id2label", "label2id", "problem_type", "chunk_size_feed_forward", "is_encoder_decoder", "tie_word_embeddings",
    "layer_scale_init_value", "use_cache",
}

# Known deviations: field suffix -> (name, cause, affects).
KNOWN = {
    "vision_config.backbone_config.layer_norm_eps": (
        "ViT LayerNorm eps",
        "transformers' Sam3ViTConfig default (1e-6) left in place; Meta's ViT builds every LayerNorm with eps=1e-5",
        "vision features, so every detector output (litetext measured on full-size S0 float32: masks 5e-5 relative); "
        "text unaffected",
    ),
    "text_config.max_position_embeddings": (
        "text context",
        "the position table's stored length (upstream slices it to the context at inference)",
        "every text stage when inputs are not this long (transformers interpolates the table to the input length)",
    ),
    "text_config.num_attention_heads": (
        "text attention heads",
        "a head count other than upstream's builder for this variant",
        "every attention layer of the text encoder, so every detector output",
    ),
}


# Fields that size tensors: a folder whose values differ cannot hold the checkpoint's weights at all,
# so the two do not belong together (a head count or an eps that differ are findings instead).
STRUCTURAL = ("hidden_size", "num_hidden_layers", "num_layers", "intermediate_size", "vocab_size", "projection_dim")


def check_belongs(prepared: Prepared, folder: Path, stored: dict) -> None:
    """One line when the folder's config (read_config's, already checked) describes another
    architecture than the checkpoint: every later level would compare unrelated tensors."""
    original = build_config(prepared.arch).to_dict()
    differences = [
        (path, theirs, ours) for path, theirs, ours in _differences(stored, original)
        if path.rsplit(".", 1)[-1] in STRUCTURAL
    ]
    if differences:
        path, theirs, ours = differences[0]
        more = f" (and {len(differences) - 1} more)" if len(differences) > 1 else ""
        raise LitetextError(
            f"{folder} and {prepared.resolved.path} do not belong together: {path} is {theirs!r} in the folder "
            f"but {ours!r} for the checkpoint{more}",
            hint="audit a folder against the checkpoint it was converted from",
        )


def audit_config(prepared: Prepared, folder: Path) -> tuple[list[Finding], dict]:
    from transformers import Sam3LiteTextConfig

    if not (folder / "config.json").is_file():
        raise LitetextError(f"{folder} is not a transformers folder (no config.json)")
    try:
        stored = Sam3LiteTextConfig.from_pretrained(str(folder)).to_dict()
    except Exception as exc:  # a foreign or damaged config fails inside transformers in many ways
        raise LitetextError(f"{folder}/config.json is not a Sam3LiteText config: {' '.join(str(exc).split())[:160]}") from None
    original = build_config(prepared.arch).to_dict()
    findings = []
    overrides: dict[str, object] = {}
    for path, theirs, ours in _differences(stored, original):
        name, cause, affects = KNOWN.get(path, (path, "differs from the original's value", "the modules this field configures"))
        recipe = None if path == "text_config.max_position_embeddings" else f"config:{path}"
        fix = (
            "follows the table: see the position table finding" if recipe is None
            else f"usage: set config.{path} = {ours!r} before from_pretrained (or re-convert with litetext)"
        )
        if recipe:
            overrides[path] = ours
        findings.append(
            Finding(level="config", kind=name, subjects=[path], affects=affects, cause=cause, fix=fix, recipe=recipe,
                    detail=f"folder {theirs!r}, original {ours!r}")
        )
    return findings, overrides


def _differences(stored, original, prefix=""):
    for key in sorted(set(stored) | set(original)):
        if key in NOT_COMPUTATIONAL:
            continue
        path = f"{prefix}{key}"
        theirs, ours = stored.get(key), original.get(key)
        if isinstance(theirs, dict) and isinstance(ours, dict):
            yield from _differences(theirs, ours, path + ".")
        elif key in original and key in stored and not _same(theirs, ours):
            yield path, theirs, ours


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and float(a) == float(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def apply_overrides(config, overrides: dict[str, object]):
    """A copy of `config` with dotted-path values replaced (the config half of the usage recipe)."""
    import copy

    config = copy.deepcopy(config)
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = config
        for part in parents:
            node = getattr(node, part)
        setattr(node, leaf, value)
    return config
