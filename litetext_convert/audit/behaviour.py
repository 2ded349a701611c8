"""Behaviour level: the folder's text outputs against the original's, stage by stage, three ways.

- "as a user runs it": Sam3Processor's tokenization (max_length=32 whatever the model), the folder's
  pad id, and the tokenizer's attention mask passed into the text encoder (what
  Sam3LiteTextModel.forward does);
- "as stored": the folder untouched, called the faithful way (tokenized at the folder's own stated
  context, no attention mask into the text encoder: upstream attends to padding). This one decides
  whether the folder computes what the original computes;
- "with the recipe": every usage fix the findings name, applied at once; it must agree, which proves
  the diagnosis complete. Leaving out one fix at a time gives each finding its cost.

Only real tokens (start token through end token) are compared: the detector masks the rest on both
sides. The original is the same engine text parity uses, at the original's context.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import torch

from litetext_convert.audit.config import apply_overrides
from litetext_convert.audit.findings import Finding
from litetext_convert.parity import recipes
from litetext_convert.parity.compare import StageDiff, compare
from litetext_convert.parity.runtime import release_mapped_pages, run_side
from litetext_convert.parity.text import (
    EOT,
    PROMPT_CORPUS,
    HFTextTrace,
    layer_kinds,
    text_state_dict,
)
from litetext_convert import dtypes
from litetext_convert.plan.prepare import Prepared
from litetext_convert.reference import (
    load_original_text_encoder,
)

# Sam3Processor.__call__ tokenizes text with padding="max_length", max_length=32, whatever the model.
PROCESSOR_TEXT_LENGTH = 32
TEXT_PREFIX = "text_encoder."

USAGE_FINDINGS = {
    "processor_length": Finding(
        level="usage", kind="processor text length", subjects=["Sam3Processor(text=...)"],
        affects="every text stage when the model's context is not 32: transformers interpolates the position table "
        "to 32 positions where upstream uses its rows as they are",
        cause="Sam3Processor tokenizes text with max_length=32 whatever the model's context (every transformers "
        "LiteText folder, litetext's included)",
        fix="usage: tokenize with the tokenizer yourself: tokenizer(prompts, padding='max_length', max_length=CONTEXT, "
        "truncation=True)", deviates=False, recipe="processor_length",
    ),
    "no_text_mask": Finding(
        level="usage", kind="text attention mask", subjects=["Sam3LiteTextModel.forward(attention_mask=...)"],
        affects="text features of real tokens in padded prompts (upstream attends to padded positions)",
        cause="Sam3LiteTextModel passes attention_mask into its text encoder; upstream's encoder has no padding mask "
        "(every transformers LiteText folder, litetext's included)",
        fix=recipes.NO_TEXT_MASK_FIX, deviates=False, recipe="no_text_mask",
    ),
}


@dataclass(frozen=True)
class RunSpec:
    """How the folder is called and which in-memory fixes are applied."""

    length: int
    pad_zero: bool
    text_mask: bool
    transpose: bool
    slice_table: bool
    overrides: tuple = ()  # ((config path, value), ...)


@dataclass
class BehaviourAudit:
    runs: dict[str, list[StageDiff]] = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)
    dtype: str = "float64"
    as_stored_passed: bool = False
    recipe_passed: bool = False

    def to_json(self) -> dict:
        return {
            "dtype": self.dtype,
            "prompts": self.prompts,
            "as_stored_passed": self.as_stored_passed,
            "recipe_passed": self.recipe_passed,
            "runs": {name: [stage.to_json() for stage in stages] for name, stages in self.runs.items()},
        }


@dataclass
class Reference:
    """The original text encoder's outputs on the prompts that fit its context (what every run is
    compared with), kept as compact copies after the encoder itself is freed."""

    prompts: list[str]
    real: list[int]  # real tokens (start through end token) per prompt
    trace: object  # TextTrace


def original_reference(prepared: Prepared, upstream, prompts: list[str], dtype: str = "float64") -> Reference:
    """The original side, built, run and freed before the folder's model is loaded (as text parity
    does, parity/runtime.run_side): the two widened text encoders are never held at once, and the
    checkpoint pages the original read are handed back."""
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    context = prepared.arch.context_length
    prompts = _fitting_prompts(upstream, context, prompts)
    up_ids = upstream(prompts, context)
    weights = text_state_dict(prepared)

    def build():
        built = load_original_text_encoder(weights, prepared.arch, torch_dtype)
        # The encoder holds its own copy: the checkpoint pages it read go before its forward runs.
        release_mapped_pages(weights.values(), prepared.loaded.format)
        return built

    side = run_side("original", build=build, forward=lambda built: built[0](up_ids))
    real = [int((row == EOT).nonzero()[0]) + 1 for row in up_ids]
    return Reference(prompts, real, side.outputs)


def audit_behaviour(prepared: Prepared, model, tokenizer, reference: Reference, findings: list[Finding], fixes: dict,
                    overrides: dict, dtype: str = "float64") -> BehaviourAudit:
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    atol, rtol = dtypes.tolerances(dtype)
    context = prepared.arch.context_length
    prompts = reference.prompts

    text_overrides = tuple((path, value) for path, value in overrides.items() if path.startswith("text_config."))
    recipe = RunSpec(context, True, False, bool(fixes.get("transpose_projection")), bool(fixes.get("slice_table")),
                     text_overrides)
    user = RunSpec(PROCESSOR_TEXT_LENGTH, False, True, False, False, ())
    as_stored = RunSpec(tokenizer.model_max_length if tokenizer.model_max_length < 10**6 else context, False, False,
                        False, False, ())

    runner = _Runner(model, tokenizer, prompts, reference.real, reference.trace, fixes, context, torch_dtype, atol, rtol)
    result = BehaviourAudit(prompts=prompts, dtype=dtype)
    result.runs["as a user runs it"] = runner(user)
    result.runs["as stored, faithful call"] = runner(as_stored)
    result.runs["with the recipe"] = runner(recipe)
    result.as_stored_passed = all(stage.passed for stage in result.runs["as stored, faithful call"])
    result.recipe_passed = all(stage.passed for stage in result.runs["with the recipe"])

    # The cost of each finding: the recipe with only that finding's fix left out.
    for finding in findings:
        without = _without(recipe, finding.recipe, tokenizer, overrides)
        if without is None:
            continue
        stages = runner(without)
        finding.cost = {stage.name: stage.max_abs for stage in stages if stage.name in ("features (detector-facing)", "pooled (CLIP-style)")}
    return result


def _without(recipe: RunSpec, fix: str | None, tokenizer, overrides: dict) -> RunSpec | None:
    if fix == "pad_zero":
        return replace(recipe, pad_zero=False)
    if fix == "no_text_mask":
        return replace(recipe, text_mask=True)
    if fix == "processor_length":
        return replace(recipe, length=PROCESSOR_TEXT_LENGTH)
    if fix == "context":
        return replace(recipe, length=tokenizer.model_max_length)
    if fix == "transpose_projection":
        return replace(recipe, transpose=False)
    if fix == "slice_table":
        return replace(recipe, slice_table=False)
    if fix and fix.startswith("config:text_config."):
        path = fix.split(":", 1)[1]
        return replace(recipe, overrides=tuple(item for item in recipe.overrides if item[0] != path))
    return None


class _Runner:
    def __init__(self, model, tokenizer, prompts, real, reference, fixes, context, dtype, atol, rtol):
        self.model, self.tokenizer, self.prompts, self.real = model, tokenizer, prompts, real
        self.reference, self.fixes, self.context, self.dtype = reference, fixes, context, dtype
        self.atol, self.rtol = atol, rtol
        # The stored encoder's own tensors (no copy): each run's encoder shares them, and only what
        # a fix changes (a transposed matrix, a sliced table) is new.
        self.base_state = model.text_encoder.state_dict()
        self.kinds = layer_kinds(model)

    def __call__(self, spec: RunSpec) -> list[StageDiff]:
        encoded = self.tokenizer(self.prompts, padding="max_length", truncation=True, max_length=spec.length, return_tensors="pt")
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        if spec.pad_zero:
            ids = ids.masked_fill(mask == 0, 0)
        saved = self.model.text_encoder
        self.model.text_encoder = self._encoder(spec)
        try:
            trace = HFTextTrace(self.model)(ids, mask if spec.text_mask else None)
        finally:
            self.model.text_encoder = saved
        return self._compare(trace)

    def _encoder(self, spec: RunSpec):
        from transformers.models.sam3_lite_text.modeling_sam3_lite_text import (
            Sam3LiteTextTextModel,
        )

        state = dict(self.base_state)
        if spec.transpose:
            for target, _ in self.fixes.get("transpose_projection", []):
                key = target[len(TEXT_PREFIX):]
                state[key] = state[key].t().contiguous()
        config = apply_overrides(self.model.config, dict(spec.overrides)).text_config
        if spec.slice_table:
            for target, _ in self.fixes.get("slice_table", []):
                key = target[len(TEXT_PREFIX):]
                state[key] = state[key][:, :, : self.context].contiguous()
            config = copy.deepcopy(config)
            config.max_position_embeddings = self.context
        # Built on the meta device and given the stored tensors (assign): no random initial weights
        # and no copy of the encoder per run (a float64 S0 text encoder is 0.34 GB).
        with torch.device("meta"):
            encoder = Sam3LiteTextTextModel(config)
        encoder.load_state_dict(state, assign=True)
        unset = [name for name, tensor in (*encoder.named_parameters(), *encoder.named_buffers()) if tensor.is_meta]
        if unset:  # a tensor outside the state dict (a non-persistent buffer) would have no values
            raise RuntimeError(f"text encoder rebuilt without values for {unset[:3]}")
        return encoder.to(self.dtype).eval()

    def _compare(self, trace) -> list[StageDiff]:
        ref, atol, rtol = self.reference, self.atol, self.rtol
        stages = [compare("embeddings", self._real(ref.embeddings), self._real(trace["embeddings"]), atol=atol, rtol=rtol)]
        for index, (ours, theirs) in enumerate(zip(ref.layers, trace["layers"])):
            stages.append(compare(f"layer.{index} ({self.kinds[index]})", self._real(ours), self._real(theirs), atol=atol, rtol=rtol))
        stages.append(compare("final_norm", self._real(ref.final_norm), self._real(trace["final_norm"]), atol=atol, rtol=rtol))
        stages.append(compare("features (detector-facing)", self._real(ref.text_features), self._real(trace["text_features"]),
                              atol=atol, rtol=rtol))
        stages.append(compare("pooled (CLIP-style)", ref.pooled, trace["pooled"], atol=atol, rtol=rtol))
        return stages

    def _real(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [real tokens, D]: start token through end token of every prompt."""
        return torch.cat([hidden[row, :count] for row, count in enumerate(self.real)])


def _fitting_prompts(upstream, context: int, extra: list[str]) -> list[str]:
    """Prompts that fit the original's context, so both sides see the same real tokens."""
    candidates = list(dict.fromkeys(PROMPT_CORPUS + extra))
    ids = upstream(candidates, context)
    return [prompt for prompt, row in zip(candidates, ids) if row.tolist().index(EOT) < context - 1]


def vision_costs(model, findings: list[Finding], overrides: dict, seed: int = 0) -> dict[str, float]:
    """The cost of each vision-config finding: FPN features of the folder as stored against the same
    weights with that one value fixed, on a seeded image (Meta's ViT itself runs only in the
    original environment: `litetext parity --scope detector`)."""
    from transformers import AutoModel

    size = model.config.vision_config.backbone_config.image_size
    dtype = next(model.vision_encoder.parameters()).dtype  # the vision side alone may be widened
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed)).to(dtype)
    state = model.vision_encoder.state_dict()
    with torch.no_grad():
        stored = model.vision_encoder(pixels).fpn_hidden_states
        costs = {}
        for finding in findings:
            path = (finding.recipe or "").removeprefix("config:")
            if not path.startswith("vision_config.") or path not in overrides:
                continue
            config = apply_overrides(model.config, {path: overrides[path]})
            fixed = AutoModel.from_config(config.vision_config).to(dtype)
            fixed.load_state_dict(state)
            outputs = fixed.eval()(pixels).fpn_hidden_states
            cost = max(float((a.double() - b.double()).abs().max()) for a, b in zip(stored, outputs))
            scale = max(float(b.double().abs().max()) for b in outputs)
            finding.cost["vision FPN (max abs)"] = cost
            finding.cost["vision FPN (relative)"] = cost / scale if scale else cost
            costs[path] = cost
    return costs
