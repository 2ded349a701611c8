"""Bad inputs through `litetext inspect`; code-executing pickles; property tests of the loader and the mapping."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from bad_inputs import corpus
from bad_inputs.common import (
    BAD_CHECKPOINTS,
    assert_one_line_error,
    bad_checkpoint,
    source_digest,
)
from bad_inputs.corpus import TINY_HEADS
from litetext_convert.errors import (
    EXIT_BAD_INPUT,
    CheckpointError,
    MappingError,
)


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_inspect_bad_checkpoint(ws, cli, case):
    checkpoint, extra, fragments = bad_checkpoint(ws, case)
    before = source_digest(checkpoint)

    result = cli("inspect", "-c", checkpoint, *extra)

    assert_one_line_error(result, EXIT_BAD_INPUT, *fragments)
    assert source_digest(checkpoint) == before


CODE_PICKLES = [corpus.code_executing_torch_file, corpus.code_executing_legacy_pickle]


@pytest.mark.parametrize("maker", CODE_PICKLES)
def test_code_executing_pickle_is_refused_and_never_runs(ws, cli, maker):
    folder = ws.inputs(f"pickle_{maker.__name__}")
    marker = folder / "CODE_RAN"
    checkpoint = maker(folder / "evil.pt", marker)
    before = corpus.sha256(checkpoint)

    for command in (["inspect"], ["convert", folder / "out", "--tokenizer", ws.tokenizer]):
        result = cli(*command, "-c", checkpoint)
        assert_one_line_error(result, EXIT_BAD_INPUT, "refuses to unpickle", "never runs code", plain_text=False)
        assert not marker.exists(), "the payload ran"
    assert corpus.listing(folder) == {"evil.pt"}
    assert corpus.sha256(checkpoint) == before


@pytest.mark.parametrize("maker", CODE_PICKLES)
def test_refused_pickle_names_the_global_in_plain_text(ws, cli, maker):
    folder = ws.inputs(f"pickle_text_{maker.__name__}")
    result = cli("inspect", "-c", maker(folder / "evil.pt", folder / "CODE_RAN"))
    assert_one_line_error(result, EXIT_BAD_INPUT, "io.open")


def test_payload_would_run_on_an_unsafe_load(ws):
    """The control for the test above: the marker does appear when code is allowed to run."""
    folder = ws.inputs("pickle_control")
    marker = folder / "CODE_RAN"
    torch.load(corpus.code_executing_torch_file(folder / "evil.pt", marker), weights_only=False)
    assert marker.exists()


# ---------------------------------------------------------------------------------------------
# 10. Properties: the mapping layer and the loader never crash with anything but their own error


@pytest.fixture(scope="module")
def mapping_inputs(ws):
    from litetext_convert.plan.prepare import prepare

    prepared = prepare(str(ws.good), num_heads=TINY_HEADS)
    meta = {key: torch.empty(value.shape, dtype=value.dtype, device="meta") for key, value in ws.state.items()}
    return SimpleNamespace(table=prepared.table, expected=prepared.expected, ctx=prepared.ctx, source=meta)


_PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_KEY_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._", min_size=1, max_size=60)
_SHAPES = st.lists(st.integers(0, 70), min_size=0, max_size=4).map(tuple)


@_PROPERTY
@given(data=st.data())
def test_build_plan_converts_or_reports(mapping_inputs, data):
    from litetext_convert.plan.mapping import build_plan

    keys = sorted(mapping_inputs.source)
    dropped = data.draw(st.sets(st.sampled_from(keys), max_size=40), label="dropped keys")
    reshaped = data.draw(st.dictionaries(st.sampled_from(keys), _SHAPES, max_size=5), label="new shapes")
    renamed = data.draw(st.dictionaries(st.sampled_from(keys), _KEY_TEXT, max_size=5), label="renamed keys")
    extra = data.draw(st.dictionaries(_KEY_TEXT, _SHAPES, max_size=5), label="extra keys")
    source = {}
    for key, tensor in mapping_inputs.source.items():
        if key in dropped:
            continue
        shape = reshaped.get(key, tuple(tensor.shape))
        source[renamed.get(key, key)] = torch.empty(shape, dtype=tensor.dtype, device="meta")
    source.update({key: torch.empty(shape, device="meta") for key, shape in extra.items()})

    try:
        build_plan(mapping_inputs.table, source, mapping_inputs.expected, mapping_inputs.ctx)
    except MappingError as error:
        assert error.problems and all("\n" not in problem for problem in error.problems)


@pytest.fixture(scope="module")
def loader_scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("loader")


def _load_or_checkpoint_error(path: Path, data: bytes) -> None:
    from litetext_convert.source.load import load_checkpoint

    path.write_bytes(data)
    try:
        load_checkpoint(path)
    except CheckpointError as error:
        assert "\n" not in error.one_line()


def _is_legacy_pickle(data: bytes) -> bool:
    return len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5




@_PROPERTY
@given(prefix=st.sampled_from([b"", b"PK\x03\x04", b"\x10\x00\x00\x00\x00\x00\x00\x00{"]), body=st.binary(max_size=512))
def test_load_checkpoint_random_bytes_only_checkpoint_error(loader_scratch, prefix, body):
    assume(not _is_legacy_pickle(prefix + body))  # covered, with its known bug, below
    _load_or_checkpoint_error(loader_scratch / "random.pt", prefix + body)


@_PROPERTY
@example(prefix=b"\x80\x02", body=b"t")
@given(prefix=st.sampled_from([b"\x80\x02", b"\x80\x05"]), body=st.binary(max_size=512))
def test_load_checkpoint_random_legacy_pickle_only_checkpoint_error(loader_scratch, prefix, body):
    _load_or_checkpoint_error(loader_scratch / "random_legacy.pt", prefix + body)


class _Sources(dict):
    """Checkpoint bytes by format; a short repr keeps hypothesis' failure reports readable."""

    def __repr__(self) -> str:
        return f"<checkpoint bytes: {', '.join(self)}>"


@pytest.fixture(scope="module")
def loader_sources(ws, loader_scratch) -> _Sources:
    small = {key: value for key, value in list(ws.state.items())[:40] if not value.is_complex()}
    legacy = loader_scratch / "legacy.pt"
    torch.save({"model": small}, legacy, _use_new_zipfile_serialization=False)
    return _Sources(
        {
            "torch zip": corpus.save_wrapped(loader_scratch / "small.pt", small).read_bytes(),
            "safetensors": corpus.save_safetensors(loader_scratch / "small.safetensors", small).read_bytes(),
            "torch legacy": legacy.read_bytes(),
        }
    )


def _cut(data: bytes, fraction: float, flip: bool) -> bytes:
    """The first `fraction` of the file, with one byte inverted in the header half when `flip`."""
    kept = bytearray(data[: int(len(data) * fraction)])
    if flip and kept:
        kept[int((len(kept) - 1) * fraction / 2)] ^= 0xFF
    return bytes(kept)


@_PROPERTY
@given(kind=st.sampled_from(["torch zip", "safetensors"]), fraction=st.floats(0, 1), flip=st.booleans())
def test_load_checkpoint_truncated_or_corrupted_only_checkpoint_error(loader_sources, loader_scratch, kind, fraction, flip):
    _load_or_checkpoint_error(loader_scratch / f"cut.{kind.replace(' ', '_')}", _cut(loader_sources[kind], fraction, flip))


@_PROPERTY
@example(fraction=0.09315808541228977, flip=True)
@given(fraction=st.floats(0, 1), flip=st.booleans())
def test_load_checkpoint_truncated_legacy_only_checkpoint_error(loader_sources, loader_scratch, fraction, flip):
    _load_or_checkpoint_error(loader_scratch / "cut_legacy.pt", _cut(loader_sources["torch legacy"], fraction, flip))
