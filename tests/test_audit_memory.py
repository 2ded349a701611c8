"""`litetext audit` holds what text parity holds, never more: one tiny audit, instrumented.

Memory is not measured here (docs/guide/audit.md has the full-size numbers); what makes it small is
asserted: the folder is read one tensor at a time and each memory-mapped source tensor is handed
back before the next target is read; the original text encoder is freed before the folder's model
loads; every behaviour run's encoder shares the stored encoder's tensors (only what a fix changes
is new); float64 widens the text modules only, as text parity does.
"""

from __future__ import annotations

import shutil
import weakref

import audit_defects as defects
import pytest
import torch
from conftest import heads

from litetext_convert.audit import behaviour as behaviour_module
from litetext_convert.audit import run as run_module
from litetext_convert.audit import tensors as tensors_module
from litetext_convert.source import load as source_load
from litetext_convert.source.load import TORCH_ZIP

# What the transpose defect makes the recipe run change: the one new tensor a run may hold.
PROJECTION_KEY = defects.PROJECTION.removeprefix("text_encoder.")


class Recorder:
    """Events of one audit, in order, from wrappers around the loaders and the page release."""

    def __init__(self):
        self.events: list[tuple[str, object]] = []
        self.live_folder_tensors: list[weakref.ref] = []
        self.most_folder_tensors_alive = 0
        self.prepared = None
        self.originals: list[weakref.ref] = []
        self.originals_alive_at_load: list[bool] | None = None
        self.model = None
        self.stored_pointers: set[int] = set()
        self.new_in_runs: list[set[str]] = []


@pytest.fixture(scope="module")
def recorded(converted, tiny_checkpoints, tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit-memory") / "folder"
    shutil.copytree(converted["s0"], folder)
    defects.transpose_projection(folder, {})  # a fix the recipe run applies: one tensor must be new
    record = Recorder()
    with pytest.MonkeyPatch.context() as patch:
        _instrument(patch, record)
        result = run_module.audit(str(folder), str(tiny_checkpoints["s0"]), num_heads=heads("s0"), dtype="float64")
    return record, result


def _instrument(patch: pytest.MonkeyPatch, record: Recorder) -> None:
    prepare, get, release = run_module.prepare, tensors_module.FolderTensors.get, source_load.release_source_pages
    load_original, load_model = behaviour_module.load_original_text_encoder, run_module._load_model

    def prepare_kept(*args, **kwargs):
        record.prepared = prepare(*args, **kwargs)
        return record.prepared

    def get_counted(self, key):
        tensor = get(self, key)
        record.events.append(("get", key))
        record.live_folder_tensors = [ref for ref in record.live_folder_tensors if ref() is not None]
        record.live_folder_tensors.append(weakref.ref(tensor))
        record.most_folder_tensors_alive = max(record.most_folder_tensors_alive, len(record.live_folder_tensors))
        return tensor

    def release_logged(tensor):
        record.events.append(("release", tensor.untyped_storage().data_ptr()))
        release(tensor)

    def load_original_watched(*args, **kwargs):
        encoder, info = load_original(*args, **kwargs)
        record.originals.append(weakref.ref(encoder))
        return encoder, info

    def load_model_watched(*args, **kwargs):
        record.originals_alive_at_load = [ref() is not None for ref in record.originals]
        record.model = load_model(*args, **kwargs)
        record.stored_pointers = {t.untyped_storage().data_ptr() for t in record.model.text_encoder.state_dict().values()}
        return record.model

    class TraceWatched(behaviour_module.HFTextTrace):
        def __call__(self, input_ids, attention_mask=None):
            state = self.model.text_encoder.state_dict()
            record.new_in_runs.append({key for key, t in state.items() if t.untyped_storage().data_ptr() not in record.stored_pointers})
            return super().__call__(input_ids, attention_mask)

    patch.setattr(run_module, "prepare", prepare_kept)
    patch.setattr(tensors_module.FolderTensors, "get", get_counted)
    patch.setattr(source_load, "release_source_pages", release_logged)  # what every page release calls
    patch.setattr(behaviour_module, "load_original_text_encoder", load_original_watched)
    patch.setattr(run_module, "_load_model", load_model_watched)
    patch.setattr(behaviour_module, "HFTextTrace", TraceWatched)


def test_the_audit_ran_and_found_the_defect(recorded):
    _, result = recorded
    assert ("tensor", "transposed") in {(f.level, f.kind) for f in result.findings if f.deviates}
    assert result.behaviour["recipe_passed"]


def test_folder_read_one_tensor_at_a_time(recorded):
    record, _ = recorded
    gets = [key for kind, key in record.events if kind == "get"]
    assert len(gets) >= len(record.prepared.plan.step_of_target)
    assert record.most_folder_tensors_alive <= 2  # the one compared, and at most the one before it


def test_each_source_tensor_is_handed_back_before_the_next_target(recorded):
    """The checkpoint is memory-mapped: a source tensor read and kept resident would make the tensor
    level hold the whole checkpoint (2.2 GB at full size) next to what follows."""
    record, _ = recorded
    assert record.prepared.loaded.format == TORCH_ZIP  # mapped: its pages are released
    source = record.prepared.loaded.tensors
    step_of = record.prepared.plan.step_of_target
    pending: set[int] = set()  # source storages read for a target and not yet released
    for kind, value in record.events:
        if kind == "release":
            pending.discard(value)
        elif value in step_of:
            pointer = source[step_of[value].source].untyped_storage().data_ptr()
            assert pending <= {pointer}, f"{value} read while an earlier source tensor is still resident"
            pending.add(pointer)
    assert not pending


def test_original_freed_before_the_folder_loads(recorded):
    record, _ = recorded
    assert record.originals_alive_at_load == [False], "the original text encoder must run and be freed first"


def test_runs_share_the_stored_encoder(recorded):
    """No run copies the stored encoder (0.34 GB in float64 at full size); the recipe run's
    transposed projection is the one new tensor."""
    record, _ = recorded
    assert len(record.new_in_runs) >= 3  # as a user runs it, as stored, with the recipe, each cost
    assert all(new <= {PROJECTION_KEY} for new in record.new_in_runs)
    assert {PROJECTION_KEY} in record.new_in_runs


def test_float64_widens_the_text_modules_only(recorded):
    record, _ = recorded
    model = record.model
    assert {p.dtype for name in ("text_encoder", "text_projection") for p in getattr(model, name).parameters()} == {torch.float64}
    assert {p.dtype for p in model.vision_encoder.parameters()} == {torch.float32}  # as stored
