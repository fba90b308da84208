"""v2a/weight_formats.py: a checkpoint is proven by its structure (torch zip + CRC-32, legacy torch, safetensors),
on files written here by torch and safetensors themselves, and every damaged variant is refused in one line."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from v2a.weight_formats import FormatError, format_of, prove

HTML = b"<!DOCTYPE html>\n<html><body>Not Found</body></html>\n"


def state_dict(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    base = torch.arange(40, dtype=torch.float32)
    return {"w": torch.randn(64, 32, generator=g), "idx": torch.arange(7), "half": torch.ones(5, dtype=torch.float16),
            "bf": torch.zeros(3, dtype=torch.bfloat16), "mask": torch.tensor([True, False]),
            "view": base[4:12], "same": base}  # view and same share one storage


def torch_bytes(sd: dict, legacy: bool) -> bytes:
    buf = io.BytesIO()
    torch.save({"model": sd, "epoch": 3}, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def safetensors_bytes(sd: dict, tmp_path: Path) -> bytes:
    p = tmp_path / "x.safetensors"
    save_file({k: v.clone().contiguous() for k, v in sd.items()}, str(p))
    return p.read_bytes()


def write(tmp_path: Path, data: bytes, name: str = "f.bin") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("legacy", [False, True])
def test_torch_checkpoints_prove_and_count_their_storages(tmp_path, legacy):
    sd = state_dict()
    data = torch_bytes(sd, legacy)
    n_storages = len({t.untyped_storage().data_ptr() for t in sd.values()})  # independent count: 6
    assert n_storages == 6
    got = prove(write(tmp_path, data), "torch")
    assert (f"{n_storages} storages" in got) and (("legacy" in got) == legacy)
    assert torch.load(io.BytesIO(data), weights_only=True)["epoch"] == 3  # the bytes are a real checkpoint


def test_safetensors_proves_and_counts_its_tensors(tmp_path):
    sd = state_dict()
    assert prove(write(tmp_path, safetensors_bytes(sd, tmp_path)), "safetensors") == \
        f"safetensors: {len(sd)} tensors covering the file exactly"


def _damaged(data: bytes) -> dict[str, bytes]:
    n = len(data)
    return {"cut at half": data[: n // 2], "cut by one byte": data[:-1], "one byte more": data + b"\0",
            "html page": HTML, "empty": b""}


@pytest.mark.parametrize("kind", ["zip", "legacy", "safetensors"])
def test_damaged_files_are_refused(tmp_path, kind):
    sd = state_dict(1)
    data = safetensors_bytes(sd, tmp_path) if kind == "safetensors" else torch_bytes(sd, kind == "legacy")
    fmt = "safetensors" if kind == "safetensors" else "torch"
    for what, bad in _damaged(data).items():
        with pytest.raises(FormatError) as err:
            prove(write(tmp_path, bad), fmt)
        assert "\n" not in str(err.value), what
    with pytest.raises(FormatError, match="HTML page"):
        prove(write(tmp_path, HTML), fmt)


def test_a_flipped_byte_in_tensor_data_fails_the_zip_crc(tmp_path):
    data = bytearray(torch_bytes(state_dict(2), legacy=False))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("/data/0"))
        name_len, extra_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
            int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    at = info.header_offset + 30 + name_len + extra_len + 5  # a byte of the first storage's data
    data[at] ^= 0xFF
    with pytest.raises(FormatError, match=r"data/0 fails its CRC-32 check"):
        prove(write(tmp_path, bytes(data)), "torch")


def test_a_zip_that_is_not_a_checkpoint_and_a_pickle_that_is_not_torch(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(FormatError, match="not a torch checkpoint"):
        prove(write(tmp_path, buf.getvalue()), "torch")
    import pickle

    with pytest.raises(FormatError, match="neither a torch zip archive nor a legacy torch file"):
        prove(write(tmp_path, pickle.dumps({"a": 1})), "torch")


def test_the_pickle_walk_imports_nothing(tmp_path):
    """A pickle naming os.system is walked with a stand-in: nothing runs, and it is no torch file."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (__import__("os").system, ("touch " + str(tmp_path / "pwned"),))

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(Evil(), protocol=2))
    assert prove(write(tmp_path, buf.getvalue()), "torch").startswith("torch zip archive: 1 members")
    assert not (tmp_path / "pwned").exists()


def test_format_of_file_names():
    assert format_of("Cnn14_16k_mAP=0.438.pth") == "torch"
    assert format_of("x.ckpt") == format_of("x.pt") == "torch"
    assert format_of("model.safetensors") == "safetensors" and format_of("config.json") == "json"
    assert format_of("weights.tar") == "unknown" and format_of("weights.tar", "torch") == "torch"
