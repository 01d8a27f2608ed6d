"""Safe checkpoint reading: the restricted unpickler, hparams.yaml and safetensors helpers."""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from difffusr_cli.checkpoint import (
    ConfigDict,
    find_hparams_yaml,
    read_hparams_yaml,
    read_lightning_checkpoint,
    read_safetensors,
    write_safetensors,
)
from difffusr_cli.errors import UnsafeCheckpointError, WeightsError

# --- the real Lightning checkpoint ----------------------------------------------------------


def test_compat_lightning_checkpoint_loads_equal_to_safetensors(compat: Path) -> None:
    checkpoint = read_lightning_checkpoint(compat / "lightning_ckpt_small.ckpt")
    state = checkpoint["state_dict"]
    expected, _ = read_safetensors(compat / "sr_small.safetensors")
    ordered = [
        entry[0]
        for entry in json.loads((compat / "sr_small.json").read_text())["state_dict_keys_ordered"]
    ]
    assert list(state) == ordered  # the pickle's OrderedDict order survives
    assert set(state) == set(expected)
    for key, tensor in expected.items():
        assert state[key].dtype == tensor.dtype, key
        assert torch.equal(state[key], tensor), key
    # Config objects come back as plain-data stand-ins; easydict was never imported.
    hyper = checkpoint["hyper_parameters"]
    assert isinstance(hyper["lit_model"], ConfigDict)
    assert hyper == read_hparams_yaml(compat / "hparams_small.yaml")
    assert "easydict" not in sys.modules
    assert checkpoint["lr_schedulers"][0]["milestones"] == {200: 1, 400: 1, 600: 1, 800: 1}


def test_weights_only_torch_load_cannot_read_it_but_we_can(compat: Path) -> None:
    # Why the restricted unpickler exists: torch's own safe mode refuses this file.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(compat / "lightning_ckpt_small.ckpt", weights_only=True)
    assert read_lightning_checkpoint(compat / "lightning_ckpt_small.ckpt")["epoch"] == 0


def test_torch_save_state_dict_round_trips(tmp_path: Path) -> None:
    weight = torch.randn(4, 3)
    state = OrderedDict(
        [
            ("a.weight", weight),
            ("a.view", weight[1:, ::2]),
            ("n", torch.tensor(7, dtype=torch.int64)),
            ("h", torch.randn(5).half()),
            ("flag", torch.tensor([True, False])),
        ]
    )
    path = tmp_path / "plain.pt"
    torch.save({"state_dict": state, "hyper_parameters": {"x": 1}}, path)
    loaded = read_lightning_checkpoint(path)["state_dict"]
    for key, tensor in state.items():
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key], tensor), key


def test_only_requested_tensors_are_read(tmp_path: Path) -> None:
    weight = torch.randn(3, 3)
    path = tmp_path / "train.ckpt"
    torch.save(
        {
            "state_dict": {"w": weight},
            "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(3, 3)}}}],
            "shared": [weight, weight],
        },
        path,
    )
    loaded = read_lightning_checkpoint(path, tensors_under={"state_dict"})
    assert torch.equal(loaded["state_dict"]["w"], weight)
    assert loaded["optimizer_states"] == [{"state": {0: {"exp_avg": None}}}] and loaded[
        "shared"
    ] == [None, None]
    everything = read_lightning_checkpoint(path)
    assert torch.equal(everything["optimizer_states"][0]["state"][0]["exp_avg"], torch.ones(3, 3))
    assert everything["shared"][0] is everything["shared"][1]  # one object in the pickle stays one
    # A bare state dict (no `state_dict` key) is read whole.
    torch.save({"w": weight}, path)
    assert torch.equal(read_lightning_checkpoint(path, tensors_under={"state_dict"})["w"], weight)


def test_parameters_and_tensor_subclass_records_become_plain_tensors(tmp_path: Path) -> None:
    parameter = torch.nn.Parameter(torch.randn(3))
    parameter.note = "attribute state"  # pickled through _rebuild_parameter_with_state
    path = tmp_path / "params.pt"
    torch.save({"state_dict": {"p": parameter}}, path)
    loaded = read_lightning_checkpoint(path)["state_dict"]["p"]
    assert type(loaded) is torch.Tensor and torch.equal(loaded, parameter.detach())


def test_legacy_torch_format_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError, match="legacy torch.save format"):
        read_lightning_checkpoint(path)


# --- malicious pickles --------------------------------------------------------------------------


class _Payload:
    """Pickles as a call of ``function(argument)``, the classic pickle exploit."""

    def __init__(self, function, argument) -> None:
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


def _payloads(marker: Path) -> list[tuple[_Payload, str, str]]:
    """Payloads and the global each makes the pickle reference first (protocol 2, protocol 4)."""
    system = f"{os.system.__module__}.system"
    return [
        (_Payload(os.system, f"touch {marker}"), system, system),
        (
            _Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
            "builtins.exec",
            "builtins.exec",
        ),
        (_Payload(builtins.eval, f"open({str(marker)!r}, 'w')"), "builtins.eval", "builtins.eval"),
        # Protocol 2 pickles a method as getattr(cls, name), protocol 4 by its qualified name.
        (_Payload(Path.touch, marker), "builtins.getattr", "pathlib.Path.touch"),
    ]


def _torch_zip(path: Path, pickled: bytes) -> Path:
    """A torch-zip-like archive (same entries as torch.save writes) around ``pickled``."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    return path


@pytest.mark.parametrize("index", range(4))
@pytest.mark.parametrize("container", ["plain-pickle", "torch-zip", "torch-save"])
def test_malicious_pickle_is_refused_and_never_runs(
    tmp_path: Path, index: int, container: str
) -> None:
    marker = tmp_path / "pwned"
    payload, refused_p2, refused_p4 = _payloads(marker)[index]
    refused_global = refused_p4 if container == "torch-zip" else refused_p2
    path = tmp_path / "evil.ckpt"
    if container == "plain-pickle":
        path.write_bytes(
            pickle.dumps(
                {"state_dict": OrderedDict(), "hyper_parameters": {"evil": payload}}, protocol=2
            )
        )
    elif container == "torch-zip":
        _torch_zip(path, pickle.dumps({"state_dict": {}, "evil": payload}, protocol=4))
    else:
        torch.save(
            {"state_dict": OrderedDict(w=torch.ones(2)), "hyper_parameters": {"evil": payload}},
            path,
        )
    with pytest.raises(UnsafeCheckpointError) as caught:
        read_lightning_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert f"references {refused_global}, which is not on difffusr's allow-list" in message
    assert not marker.exists()


def test_unknown_module_is_refused_before_import(tmp_path: Path) -> None:
    # GLOBAL opcode naming a module that does not exist: refusal, not ModuleNotFoundError.
    pickled = b"\x80\x02cdifffusr_no_such_module\npayload\nq\x00)\x81q\x01."
    path = tmp_path / "x.ckpt"
    path.write_bytes(pickled)
    with pytest.raises(UnsafeCheckpointError, match="difffusr_no_such_module.payload"):
        read_lightning_checkpoint(path)
    assert "difffusr_no_such_module" not in sys.modules


def test_tensor_record_past_its_storage_is_rejected(tmp_path: Path) -> None:
    class FakeStorage:
        pass

    class FakeTensor:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (
                FakeStorage(),
                0,
                (100,),
                (1,),
                False,
                OrderedDict(),
            )

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, FakeStorage):
                return ("storage", torch.FloatStorage, "0", "cpu", 4)
            return None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"state_dict": {"w": FakeTensor()}})
    path = _torch_zip(tmp_path / "oob.ckpt", buffer.getvalue())
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("archive/data/0", bytes(16))
    with pytest.raises(WeightsError, match="reaches element 99"):
        read_lightning_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_garbage_files_give_weights_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(WeightsError) as caught:
        read_lightning_checkpoint(path)
    assert str(path) in str(caught.value)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no such checkpoint file"):
        read_lightning_checkpoint(tmp_path / "absent.ckpt")


# --- hparams.yaml ---------------------------------------------------------------------------------


def test_hparams_yaml_reads_easydict_tags_as_plain_data(compat: Path) -> None:
    hparams = read_hparams_yaml(compat / "hparams_small.yaml")
    unet = hparams["lit_model"]["args"]["diffusion_model"]["args"]
    assert unet["channel_mults"] == [1, 1] and unet["inner_channel"] == 32
    assert hparams["lit_model"]["args"]["encoder"]["args"]["num_block"] == 1

    def plain(value) -> bool:
        if isinstance(value, dict):
            return type(value) is dict and all(plain(v) for v in value.values())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return isinstance(value, (str, int, float, bool, type(None)))

    assert plain(hparams)


@pytest.mark.parametrize(
    "document",
    [
        "x: !!python/object/apply:os.system ['touch {marker}']",
        "x: !!python/name:os.system",
        "x: !!python/object/new:subprocess.Popen [['touch', '{marker}']]",
    ],
)
def test_hparams_yaml_refuses_code_tags(tmp_path: Path, document: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "hparams.yaml"
    path.write_text(document.format(marker=marker))
    with pytest.raises(UnsafeCheckpointError, match="python/"):
        read_hparams_yaml(path)
    assert not marker.exists()


def test_find_hparams_beside_or_two_folders_up(tmp_path: Path) -> None:
    run = tmp_path / "exp" / "version_3"
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    assert find_hparams_yaml(ckpt) is None
    (run / "hparams.yaml").write_text("a: 1\n")
    assert find_hparams_yaml(ckpt) == run / "hparams.yaml"
    (ckpt.parent / "hparams.yaml").write_text("a: 2\n")
    assert find_hparams_yaml(ckpt) == ckpt.parent / "hparams.yaml"


# --- safetensors ----------------------------------------------------------------------------------


def test_safetensors_round_trip_with_views_and_metadata(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {
        "base": base,
        "col": base[:, 1],
        "rows": base[1:3],
        "count": torch.tensor([3], dtype=torch.int64),
    }
    path = write_safetensors(tmp_path / "sub" / "w.safetensors", tensors, {"difffusr": "{}"})
    loaded, metadata = read_safetensors(path)
    assert metadata["difffusr"] == "{}"
    for key, tensor in tensors.items():
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key], tensor), key
    assert not list(path.parent.glob(".*partial"))  # the temporary file was renamed away


def test_unreadable_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        read_safetensors(path)
