"""Prints how far the av-benchmark-faithful metric inputs (scoring/audio.py) are from the previous ones (scipy
``resample_poly``, DC removed on the 8 s crop, PaSST fed from the 16 kHz crop, channels mixed) on a synthetic 10 s
44.1 kHz stereo file with content up to 12 kHz. Not timed: figures for the README/report.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/audio_inputs.py
"""
import numpy as np, torch
from fractions import Fraction
from scipy import signal
from scoring.audio import ClipAudio
RATE = 44100
t = np.arange(10 * RATE) / RATE
rng = np.random.default_rng(0)
left = 0.4*np.sin(2*np.pi*440*t) + 0.2*np.sin(2*np.pi*12000*t) + 0.1*rng.standard_normal(t.size)
right = 0.5*np.sin(2*np.pi*1000*t) + 0.05*rng.standard_normal(t.size)
ch = np.stack([left, right]).astype(np.float32)
def poly(x, a, b):
    f = Fraction(b, a); return signal.resample_poly(np.asarray(x, np.float64), f.numerator, f.denominator).astype(np.float32)
rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))
clip = ClipAudio(ch, RATE)
new16 = clip.av_input(16000, 8.0)
old16 = poly(ch.mean(0), RATE, 16000)[:128000]; old16 = old16 - old16.mean()
print(f"PANNs/VGGish input, 44.1 kHz stereo: old (scipy, crop DC) vs new (Resample, file DC): rel L2 {rel(old16, new16):.4f}")
new32 = clip.av_input(32000, 8.0)
old32 = poly(old16, 16000, 32000)
print(f"PaSST input: old (16 kHz crop -> 32 kHz) vs new (file -> 32 kHz): rel L2 {rel(old32, new32):.4f}")
from frozen.resample import resample
a = resample(torch.from_numpy(ch[0]), RATE, 16000).numpy()
print(f"channel 0 vs channel mean at 16 kHz: rel L2 {rel(resample(torch.from_numpy(ch.mean(0)), RATE, 16000).numpy(), a):.4f}")
