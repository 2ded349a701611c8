"""The performance mechanisms keep their meaning: the overlapped conversion still checks the plan
against the real model before anything is published; float64 text parity widens only what it
compares; parity sides run one at a time and are freed. No timing assertions."""

from __future__ import annotations

import gc
import hashlib
import weakref

import pytest
import torch
from conftest import heads

from litetext_convert.errors import MappingError
from litetext_convert.parity.runtime import keep_outputs, run_side
from litetext_convert.parity.text import TEXT_MODULES, load_converted
from litetext_convert.plan import prepare as prepare_module
from litetext_convert.plan.prepare import prepare, read_checkpoint
from litetext_convert.workflows.convert import ConvertOptions, convert_folder
from litetext_convert.write.convert import convert


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_model_built_in_the_background_writes_the_same_weights(tiny_checkpoints, converted, tokenizer_dir, tmp_path):
    prepared = read_checkpoint(str(tiny_checkpoints["s0"]), num_heads=heads("s0"))
    assert not prepared.must_check_before_writing and not prepared.checked
    prepared.target_model.start_in_background()
    convert(prepared, tmp_path / "out", tokenizer=str(tokenizer_dir))

    assert prepared.checked  # convert waited for the model and checked the plan before publishing
    assert _digest(tmp_path / "out" / "model.safetensors") == _digest(converted["s0"] / "model.safetensors")


def test_convert_folder_refuses_a_plan_the_model_rejects_and_publishes_nothing(tiny_checkpoints, tokenizer_dir, tmp_path,
                                                                                 monkeypatch):
    real = prepare_module.meta_model_tensors

    def model_without_one_parameter(config):
        expected = real(config)
        expected.pop(next(name for name in expected if name.startswith("text_encoder.")))
        return expected

    monkeypatch.setattr(prepare_module, "meta_model_tensors", model_without_one_parameter)
    monkeypatch.setenv("LITETEXT_NO_CACHE", "1")  # the broken model is built, never read from the cache
    with pytest.raises(MappingError) as caught:
        convert_folder(str(tiny_checkpoints["s0"]), tmp_path / "out", ConvertOptions(num_heads=heads("s0"), tokenizer=str(tokenizer_dir)))

    assert any(problem.startswith("unexpected target: text_encoder.") for problem in caught.value.problems)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary one


def test_table_problems_are_checked_before_writing_with_the_model_problems(tiny_checkpoints, tmp_path):
    table = tmp_path / "mapping.toml"
    text = (prepare_module.load_table().path).read_text()
    table.write_text(text + '\n[[drop]]\nsource = "detector\\\\..*"\nreason = "test: every detector key also dropped"\n')
    prepared = read_checkpoint(str(tiny_checkpoints["s0"]), num_heads=heads("s0"), table_path=table)
    assert prepared.must_check_before_writing
    with pytest.raises(MappingError) as caught:
        prepared.check_against_model()
    assert any("ambiguous source key" in problem for problem in caught.value.problems)


def test_float64_text_parity_widens_only_the_text_modules(converted):
    model = load_converted(converted["s0"], torch.float64)
    for name, parameter in model.named_parameters():
        widened = name.split(".")[0] in TEXT_MODULES
        assert parameter.dtype == (torch.float64 if widened else torch.float32), name


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x):
        wide = torch.stack([self.linear(x)] * 8)  # a big activation; only one slice is kept
        return {"slice": wide[3].t(), "nested": [self.linear.weight.sum()], "label": "kept as is"}


def test_run_side_keeps_compact_copies_and_frees_the_model_before_release():
    models: list[weakref.ref] = []
    events = []

    def build():
        model = _Model()
        models.append(weakref.ref(model))
        return model

    def release():
        gc.collect()
        events.append(("released", models[0]() is None))

    side = run_side("toy", build=build, forward=lambda m: m(torch.ones(2, 4)), describe=lambda m: type(m).__name__,
                    release=release, keep_dtype=torch.float64)

    assert events == [("released", True)]
    assert side.info == "_Model" and set(side.seconds) == {"toy_build", "toy_forward"}
    kept = side.outputs["slice"]
    assert kept.dtype == torch.float64 and kept.shape == (4, 2) and not kept.requires_grad
    assert kept.untyped_storage().nbytes() == kept.numel() * kept.element_size()
    assert side.outputs["label"] == "kept as is" and side.outputs["nested"][0].dtype == torch.float64


def test_keep_outputs_copies_views_only():
    owned = torch.arange(6.0)
    assert keep_outputs(owned).data_ptr() == owned.data_ptr()  # no copy of what owns its storage
    view = torch.arange(12.0).reshape(3, 4)[1]
    kept = keep_outputs(view)
    assert torch.equal(kept, view) and kept.untyped_storage().nbytes() == 4 * 4


def _convert_counting_copies(checkpoint, tokenizer_dir, out, monkeypatch, copy_file_range):
    """Convert, recording how many bytes the kernel copied file to file."""
    import errno
    import os

    from litetext_convert.write import shards

    copied = []
    if copy_file_range == "refused":  # a file system without range copies (EXDEV/EOPNOTSUPP)
        def refuse(*args):
            raise OSError(errno.EOPNOTSUPP, "not supported")
        monkeypatch.setattr(os, "copy_file_range", refuse)
    elif copy_file_range == "absent":
        monkeypatch.delattr(os, "copy_file_range")
    real_copy = shards.FileCopier.copy

    def counting(self, tensor, out_fd):
        done = real_copy(self, tensor, out_fd)
        copied.append(tensor.numel() * tensor.element_size() if done else 0)
        return done

    monkeypatch.setattr(shards.FileCopier, "copy", counting)
    convert(prepare(str(checkpoint), num_heads=heads("s0")), out, tokenizer=str(tokenizer_dir))
    monkeypatch.undo()
    return sum(copied)


@pytest.mark.parametrize("copy_file_range", ["refused", "absent"])
def test_kernel_copy_writes_the_same_bytes_as_writing_from_memory(tiny_checkpoints, tokenizer_dir, tmp_path, monkeypatch,
                                                                   copy_file_range):
    """Unchanged tensors go file to file (copy_file_range); without it every tensor is written from
    memory. Both give the same shard, byte for byte, and the kernel path really is taken."""
    kernel = _convert_counting_copies(tiny_checkpoints["s0"], tokenizer_dir, tmp_path / "kernel", monkeypatch, "present")
    memory = _convert_counting_copies(tiny_checkpoints["s0"], tokenizer_dir, tmp_path / "memory", monkeypatch, copy_file_range)
    shard = "model.safetensors"
    assert kernel > 0.5 * (tmp_path / "kernel" / shard).stat().st_size  # most bytes are renamed tensors
    assert memory == 0
    assert _digest(tmp_path / "kernel" / shard) == _digest(tmp_path / "memory" / shard)


@pytest.mark.parametrize("kernel, stride, padding, dilation, groups", [
    (3, 1, 1, 1, 1), (3, 2, 1, 1, 2), (5, 1, 2, 2, 1), (3, 1, 1, 1, 8), ((1, 3), 1, (0, 1), 1, 4),
])
def test_banded_float64_convolution_is_the_same_convolution(monkeypatch, kernel, stride, padding, dilation, groups):
    """Float64 detector parity computes large convolutions in bands of output rows (torch's float64
    CPU convolution unfolds the whole input: 1.6 GB for one full-size pixel-decoder layer). Same
    shape, same values up to float64 summation order; float32 and small inputs pass through."""
    import torch.nn.functional as F

    from litetext_convert.parity import runtime

    monkeypatch.setattr(runtime, "BAND_SCRATCH_BYTES", 4096)  # band even these small inputs
    generator = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, kernel, stride, padding, dilation, groups).double()
    x = torch.randn(2, 8, 21, 13, dtype=torch.float64, generator=generator)
    calls = []
    real = F.conv2d
    monkeypatch.setattr(F, "conv2d", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    with torch.no_grad():
        plain = conv(x)
        calls.clear()
        with runtime.banded_float64_convolution():
            banded = conv(x)
            single = conv.float()(x.float())  # float32: passed through, one call
    assert len(calls) > 2  # banded: several calls of the real convolution, then the float32 one
    assert banded.shape == plain.shape and banded.dtype == torch.float64
    assert float((banded - plain).abs().max()) <= 1e-13 * float(plain.abs().max())
    assert torch.equal(single, torch.nn.functional.conv2d(x.float(), conv.weight, conv.bias, stride, padding, dilation, groups))


# ----------------------------------------------------------------------------------------------
# convert hashes the source before torch is imported


def test_the_cli_imports_without_torch():
    """convert starts the source's sha256 before anything imports torch (~1.5 s on the other core)."""
    import subprocess
    import sys

    code = ("import sys, litetext_convert.cli, litetext_convert.workflows.convert, litetext_convert.source.resolve, "
            "litetext_convert.source.digest; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_already_here_finds_local_files_and_hub_cached_aliases_without_the_network(tiny_checkpoints, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from litetext_convert.families import all_aliases
    from litetext_convert.source.resolve import already_here

    assert already_here(str(tiny_checkpoints["s0"])) == tiny_checkpoints["s0"].resolve()
    assert already_here(str(tmp_path)) is None  # a folder
    assert already_here(str(tmp_path / "nothing.pt")) is None

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    family, filename = all_aliases()["s0_ctx16"]
    assert already_here("s0_ctx16") is None  # not cached: resolve() will say why, in its place
    repo = cache / f"models--{family.repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123abc" / filename
    snapshot.parent.mkdir(parents=True)
    snapshot.write_bytes(tiny_checkpoints["s0"].read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / family.revision).write_text("0123abc")
    assert already_here("s0_ctx16") == snapshot
    assert already_here(f"{family.repo_id}:{filename}", revision=family.revision) == snapshot
    assert already_here("no_such_alias") is None


def test_convert_keeps_an_early_hash_only_of_the_file_it_resolves(tiny_checkpoints):
    from conftest import sha256

    from litetext_convert.source.digest import SourceHash
    from litetext_convert.workflows.convert import hash_of_resolved

    early = SourceHash(tiny_checkpoints["s0"])
    assert hash_of_resolved(early, tiny_checkpoints["s0"]) is early and early.result() == sha256(tiny_checkpoints["s0"])

    other = SourceHash(tiny_checkpoints["s1"])  # started for another file: not taken
    rehashed = hash_of_resolved(other, tiny_checkpoints["s0"])
    assert rehashed is not other and rehashed.result() == sha256(tiny_checkpoints["s0"])
    assert hash_of_resolved(None, tiny_checkpoints["s0"]).result() == sha256(tiny_checkpoints["s0"])
