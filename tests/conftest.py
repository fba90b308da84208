import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def demo_config():
    """``demo_config(root, *overrides)``: stages.yaml + configs/demo.yaml with every path under ``root``."""
    from v2a.config import load_config

    def make(root: Path, *extra: str):
        sets = [f"paths.videos={root / 'videos'}", f"paths.labels={root / 'videos' / 'labels.csv'}",
                f"paths.cache={root / 'cache'}", f"paths.runs={root / 'runs'}", f"paths.outputs={root / 'out'}", *extra]
        return load_config([REPO / "stages.yaml", REPO / "configs" / "demo.yaml"], sets)

    return make


def read_reference_keys(name: str) -> list[tuple[str, list[int]]]:
    """A released checkpoint's (key, shape) list, in file order, from ``tests/data/<name>.tsv``."""
    rows = []
    for line in (DATA / f"{name}.tsv").read_text().splitlines():
        key, shape = line.split("\t")
        rows.append((key, [int(s) for s in shape.strip("[]").split(",") if s.strip()]))
    return rows


@pytest.fixture(scope="session")
def reference_keys():
    """``reference_keys(name)`` -> [(key, shape)] of ``tests/data/<name>.tsv``."""
    return read_reference_keys


@pytest.fixture(scope="session")
def meta_keys():
    """``meta_keys(factory)`` -> [(key, shape)] of ``factory()``'s state dict, built on the meta device."""
    def keys(factory):
        with torch.device("meta"):
            model = factory()
        return [(k, list(v.shape)) for k, v in model.state_dict().items()]

    return keys


def kaldi_native_fbank(x: np.ndarray, num_bins: int, sr: int = 16000) -> np.ndarray:
    """Kaldi fbank by kaldi-native-fbank (an independent implementation), Kaldi's defaults spelt out: 25 ms / 10 ms
    hanning frames, no dither, pre-emphasis 0.97, DC removed, 20 Hz to Nyquist, log mel energies (frames, bins)."""
    knf = pytest.importorskip("kaldi_native_fbank")
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = sr
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hanning"
    opts.frame_opts.frame_length_ms = 25.0
    opts.frame_opts.frame_shift_ms = 10.0
    opts.frame_opts.preemph_coeff = 0.97
    opts.frame_opts.remove_dc_offset = True
    opts.frame_opts.snip_edges = True
    opts.frame_opts.round_to_power_of_two = True
    opts.mel_opts.num_bins = num_bins
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0  # Nyquist
    opts.mel_opts.htk_mode = False  # torchaudio's htk_compat only moves the energy column
    opts.use_energy = False
    opts.htk_compat = True
    online = knf.OnlineFbank(opts)
    online.accept_waveform(sr, x.tolist())  # floats taken as is, no int16 scaling
    online.input_finished()
    return np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])


@pytest.fixture(scope="session")
def knf_fbank():
    """``knf_fbank(x, num_bins)``: see :func:`kaldi_native_fbank` (skips when kaldi-native-fbank is missing)."""
    return kaldi_native_fbank


@pytest.fixture(scope="session")
def e2e_project(tmp_path_factory, demo_config):
    """Every stage run once with the tiny models on 7 synthetic clips (tests/e2e_project.py); read-only for tests:
    copy it before changing anything."""
    from e2e_project import make_project

    return make_project(tmp_path_factory.mktemp("e2e"), demo_config)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is faster than two fighting for cores
    (a module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def keep_logging():
    """The CLI configures logging onto CliRunner's temporary stderr; put the handlers back afterwards."""
    import logging

    handlers, level = logging.root.handlers[:], logging.root.level
    yield
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)

