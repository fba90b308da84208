"""frozen/weights.py: reading, unwrapping, the checked load and the seeded tiny inits, on small modules."""

import logging

import pytest
import torch
from torch import nn

from frozen import weights as W


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.norm = nn.LayerNorm(2)
        self.bn = nn.BatchNorm1d(2)


def _state(seed=0):
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in Net().state_dict().items()}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------- unwrap


@pytest.mark.parametrize("wrap", [lambda sd: sd, lambda sd: {"state_dict": sd, "epoch": 3},
                                  lambda sd: {"model": sd, "optimizer": None},
                                  lambda sd: {"model": {"state_dict": sd}}])
def test_unwrap_descends_nestings_and_strips_prefixes(wrap):
    sd = _state()
    prefixed = {f"module.net.{k}": v for k, v in sd.items()}
    got = W.unwrap(wrap({**prefixed, "config": "not a tensor"}), source="t", strip=("module.", "net."))
    assert _equal(got, sd)
    only_module = W.unwrap(wrap(prefixed), source="t")  # default strips module. only
    assert sorted(only_module) == sorted(f"net.{k}" for k in sd)


def test_unwrap_under_keeps_one_model_of_a_combined_file():
    sd = _state()
    combined = {**{f"cond.audiomae.model.{k}": v for k, v in sd.items()}, "unet.w": torch.ones(2)}
    assert _equal(W.unwrap({"state_dict": combined}, source="t", under="cond.audiomae.model."), sd)
    with pytest.raises(RuntimeError, match="holds a list"):
        W.unwrap([1, 2], source="t")


# ----------------------------------------------------------------------------------------------- reading


def test_safetensors_and_pth_read_the_same_tensors(tmp_path):
    from safetensors.torch import save_file

    sd = _state(1)
    save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": sd}, tmp_path / "w.pth")
    torch.save({"state_dict": sd}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)  # no mmap
    for name in ("w.safetensors", "w.pth", "legacy.pt"):
        assert _equal(W.unwrap(W.read_weights(tmp_path / name, "test"), source=name), sd)


def test_read_refuses_missing_files_and_pickled_objects(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        W.read_weights(tmp_path / "nope.pth", "test")
    torch.save({"cfg": Net()}, tmp_path / "pickled.pt")  # a module: not loadable with weights_only=True
    with pytest.raises(RuntimeError, match="(?s)weights_only=True.*save it once"):
        W.read_weights(tmp_path / "pickled.pt", "test", hint="save it once")


# ----------------------------------------------------------------------------------------------- checked load


def test_load_checked_round_trip_and_report():
    sd = _state(2)
    model = Net()
    report = W.load_checked(model, sd, source="file.pth")
    assert report == W.LoadReport([], [], [])
    assert _equal(model.state_dict(), sd)


def test_missing_and_wrong_shape_keys_raise_naming_the_file_and_the_keys():
    sd = _state()
    missing = {k: v for k, v in sd.items() if k != "fc.bias"}
    with pytest.raises(RuntimeError, match=r"'a.pth' does not match Net: missing \['fc.bias'\]"):
        W.load_checked(Net(), missing, source="'a.pth'")
    bad = {**sd, "norm.weight": torch.ones(5)}
    with pytest.raises(RuntimeError, match=r"wrong shape \['norm.weight'\].*\(5,\) vs \(2,\)"):
        W.load_checked(Net(), bad, source="b.pth")
    model = Net()
    report = W.load_checked(model, missing, source="c.pth", allow_missing=("fc.",))  # allowed: left as it was
    assert report.missing == ["fc.bias"] and torch.equal(model.fc.weight, sd["fc.weight"])


def test_unexpected_keys_are_reported_or_raise_and_ignorable_prefixes_are_dropped(caplog):
    sd = {**_state(), "head.weight": torch.zeros(1), "pproc.mean": torch.zeros(1)}
    with caplog.at_level(logging.INFO, logger="frozen.weights"):
        report = W.load_checked(Net(), sd, source="d.pth", ignore=("pproc.",), ignore_why="PCA, not applied")
    assert report.unexpected == ["head.weight"] and report.ignored == ["pproc.mean"] and report.missing == []
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "head.weight" in warned[0].getMessage() and "d.pth" in warned[0].getMessage()
    assert "PCA, not applied" in caplog.text
    with pytest.raises(RuntimeError, match=r"unexpected \['head.weight'\]"):
        W.load_checked(Net(), sd, source="d.pth", ignore=("pproc.",), unexpected="raise")
    with pytest.raises(ValueError, match="unexpected must be"):
        W.load_checked(Net(), sd, source="d.pth", unexpected="ignore")


def test_meta_model_receives_the_tensors_cast_to_its_dtypes():
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in _state(3).items()}
    with torch.device("meta"):
        model = Net()
    W.load_checked(model, sd, source="e.pth")
    got = model.state_dict()
    assert not any(t.is_meta for t in got.values())
    assert got["fc.weight"].dtype == torch.float32 and got["bn.num_batches_tracked"].dtype == torch.int64
    assert torch.equal(got["fc.weight"], sd["fc.weight"].float())
    with torch.device("meta"):
        partial = Net()
    with pytest.raises(RuntimeError, match="meta device"):  # a missing key would stay without storage
        W.load_checked(partial, {k: v for k, v in sd.items() if k != "fc.bias"}, source="f.pth", allow_missing=("fc.",))


def test_load_checkpoint_reads_unwraps_and_checks(tmp_path):
    sd = _state(4)
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ddp.pth")
    model = Net()
    W.load_checkpoint(model, tmp_path / "ddp.pth")
    assert _equal(model.state_dict(), sd)
    with pytest.raises(RuntimeError, match=r"Net checkpoint '.*ddp.pth' does not match Net: missing"):
        W.load_checkpoint(Net(), tmp_path / "ddp.pth", strip=())


# ----------------------------------------------------------------------------------------------- tiny models


def test_seeded_is_deterministic_and_restores_the_global_rng():
    torch.manual_seed(123)
    expect = torch.rand(4)
    torch.manual_seed(123)
    a = W.seeded(Net, 7)
    assert torch.equal(torch.rand(4), expect)  # the caller's stream continues as if nothing happened
    b, c = W.seeded(Net, 7), W.seeded(Net, 8)
    assert _equal(a.state_dict(), b.state_dict())
    assert not torch.equal(a.fc.weight, c.fc.weight)
    torch.manual_seed(7)
    assert _equal(a.state_dict(), Net().state_dict())  # exactly the module's own init under that seed


def test_seeded_perturbation_touches_only_norms_and_biases():
    plain, moved = W.seeded(Net, 5), W.seeded(Net, 5, perturb=0.1)
    assert torch.equal(plain.fc.weight, moved.fc.weight) and torch.equal(plain.bn.weight, moved.bn.weight)
    for name in ("fc.bias", "norm.weight", "norm.bias", "bn.bias"):
        diff = (moved.get_parameter(name) - plain.get_parameter(name)).abs()
        assert 0 < diff.max() < 1.0, name
    assert _equal(moved.state_dict(), W.seeded(Net, 5, perturb=0.1).state_dict())


def test_init_tiny_redraws_floats_in_state_dict_order_from_its_own_generator():
    seen = []

    def rule(name, module, t, draw):
        seen.append((name, type(module).__name__))
        return draw("randn") if name != "bn.running_var" else 1.0 + draw("rand")

    model = Net()
    state = torch.random.get_rng_state()
    model = W.init_tiny_(model, 11, rule)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is not used
    floats = [k for k, v in model.state_dict().items() if v.is_floating_point()]
    assert [n for n, _ in seen] == floats and ("bn.running_mean", "BatchNorm1d") in seen
    g = torch.Generator().manual_seed(11)
    expect = {k: torch.randn(model.state_dict()[k].shape, generator=g) if k != "bn.running_var"
              else 1.0 + torch.rand(2, generator=g) for k in floats}
    assert all(torch.equal(model.state_dict()[k], expect[k]) for k in floats)
    assert model.bn.num_batches_tracked.item() == 0  # integer buffers are left alone
