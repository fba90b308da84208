"""The exported pipeline folder (the layout of a Hugging Face model repo) and what it says about its encoders.

Layout (``save_pretrained`` writes it, ``from_pretrained`` reads it, a hub repo holds the same files)::

    model_index.json          class name, format version, the files below
    mapper/config.json        the mapper's spec (its family: ``kind``): rebuilds it without the cache or the hub
    mapper/model.safetensors  the mapper's weights
    encoders.json             the frames params and, per visual encoder, its params and weight identities
                              (the encoders the mapper was trained on; the AudioMAE or CLAP target for the record)
    generation_config.json    the generator and its build params, ``{"audioldm2": {...}}`` (MFM-Mapper,
                              Diff-Mapper) or ``{"audioldm": {...}}`` (V2A-Mapper), and ``"settings"``: the
                              GenerationSettings a call uses by default (infer/params.py: steps, guidance, seed, ...)
    training.json             data, epochs, validation MSE, evaluation metrics (when evaluated)
    README.md                 the model card (from training.json)

Weight identities are compared by file name (and size when both sides know it), never by absolute path or
mtime, so that the same checkpoint downloaded from the hub or copied to another machine counts as the same.

Format 2 (V2A-Mapper folders, ``settings``); format 1 folders (AudioLDM-2 only, their settings under ``defaults``)
are still read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT = 2
CLASS_NAME = "MFMMapperPipeline"
INDEX = "model_index.json"
FILES = {"mapper_config": "mapper/config.json", "mapper_weights": "mapper/model.safetensors",
         "encoders": "encoders.json", "generation": "generation_config.json", "training": "training.json",
         "card": "README.md"}
# params that change how an encoder runs, not what it computes (up to float rounding): never compared
COMPUTE_ONLY = {"half", "frame_batch", "chunk_frames", "revision", "batch_size", "device"}
FRAME_KEYS = ("fps", "seconds", "size", "sample_rate", "codec")
CODEC_KEYS = {"jpeg": ("quality",), "h264": ("crf", "preset"), "raw": ()}  # what changes each codec's bytes


def frame_keys(frames: dict) -> tuple[str, ...]:
    """The frames params that decide what the encoders see: the shared ones and those of the record's codec
    (records written before ``codec`` had a default stored H.264)."""
    return FRAME_KEYS + CODEC_KEYS.get(frames.get("codec", "h264"), ())


def weights_identity(value: Any, filename: str | None = None) -> dict | None:
    """Name (and size when it is a local file) of a checkpoint reference: a file, a folder or a hub id."""
    if value in (None, ""):
        return None
    ref = str(value)
    p = Path(ref).expanduser()
    if p.is_file():
        return {"name": p.name, "size": p.stat().st_size}
    if p.is_dir():
        return {"name": p.name}
    parts = ref.split("/")
    name = Path(filename).name if filename and len(parts) == 2 else parts[-1]
    return {"name": name, "hub": ref}


def encoder_record(params: dict, checkpoints: list[str]) -> dict:
    """What the folder records about one encoder: its params, which of them name weights, their identities."""
    filename = params.get("filename")
    return {"params": dict(params), "checkpoints": list(checkpoints),
            "identity": {k: weights_identity(params.get(k), filename if k == "checkpoint" else None)
                         for k in checkpoints}}


def _same_weights(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return a is b
    if a["name"] != b["name"]:
        return False
    return a.get("size") is None or b.get("size") is None or a["size"] == b["size"]


def encoder_differences(trained: dict, configured: dict) -> list[str]:
    """Every way the ``configured`` encoders (``encoders.json`` layout) differ from the ``trained`` ones, as
    ``'cavp.seed 0 -> 1'`` strings; empty when the mapper can use the configured encoders."""
    out = []
    tf, cf = trained.get("frames", {}), configured.get("frames", {})
    trained_keys = frame_keys(tf)
    keys = trained_keys + tuple(k for k in frame_keys(cf) if k not in trained_keys)
    defaults = {"preset": "medium"}  # records older than the preset option stored x264's medium
    pairs = [(k, tf.get(k, defaults.get(k)), cf.get(k, defaults.get(k))) for k in keys]
    out += [f"frames.{k} {t!r} -> {c!r}" for k, t, c in pairs if t != c]
    for name, t in trained["encoders"].items():
        c = configured["encoders"].get(name)
        if c is None:
            out.append(f"{name} not configured")
            continue
        ckpts = set(t["checkpoints"]) | set(c["checkpoints"])
        skip = COMPUTE_ONLY | ckpts | {"filename"} | {k for k in set(t["params"]) | set(c["params"])
                                                      if k.endswith("_revision")}
        for k in sorted((set(t["params"]) | set(c["params"])) - skip):
            if t["params"].get(k) != c["params"].get(k):
                out.append(f"{name}.{k} {t['params'].get(k)!r} -> {c['params'].get(k)!r}")
        for k in sorted(ckpts):
            a, b = t["identity"].get(k), c["identity"].get(k)
            if not _same_weights(a, b):
                out.append(f"{name}.{k} {a and a['name']!r} -> {b and b['name']!r}")
    return out


def check_encoders(trained: dict, configured: dict, where: str) -> None:
    """Stop with one line naming what differs between the configured encoders and those the mapper knows."""
    diff = encoder_differences(trained, configured)
    if diff:
        raise ValueError(f"the mapper {where} was trained with other encoders than those configured: "
                         f"{'; '.join(diff)} (configure the encoders it was trained with, or retrain)")


def resolve_folder(name_or_path: str | Path, *, revision: str | None = None, token: str | None = None,
                   cache_dir: str | Path | None = None) -> Path:
    """A local pipeline folder, or a hub repo id fetched with ``huggingface_hub.snapshot_download`` (which uses
    its local cache offline, HF_HUB_OFFLINE=1)."""
    ref = str(name_or_path)
    p = Path(ref).expanduser()
    if p.is_dir():
        if not (p / INDEX).is_file():
            raise FileNotFoundError(f"{p} holds no {INDEX}: not a pipeline folder (write one with `v2a export`)")
        return p
    parts = ref.split("/")
    if p.exists() or ref.startswith((".", "/", "~")) or len(parts) != 2 or not all(parts):
        raise FileNotFoundError(f"mapper {ref!r} is neither a pipeline folder nor a hub repo id 'owner/name'")
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id=ref, revision=revision, token=token, cache_dir=cache_dir))
    except Exception as e:  # offline, unknown repo, no access: one line with the hub's reason
        raise FileNotFoundError(f"mapper {ref!r} is not a local folder and could not be fetched from the hub: "
                                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if not (folder / INDEX).is_file():
        raise FileNotFoundError(f"hub repo {ref} holds no {INDEX}: not an MFM-Mapper pipeline")
    return folder


def generation_record(generator: str, model_params: dict, settings) -> dict:
    """``generation_config.json``: ``{generator: its build params, "settings": the generation settings}``."""
    import dataclasses

    return {generator: dict(model_params), "settings": dataclasses.asdict(settings)}


def read_generation(record: dict) -> tuple[str, dict, Any]:
    """(generator, its build params, GenerationSettings) of a ``generation_config.json`` (format 1 or 2)."""
    from infer.params import GENERATORS, GenerationSettings

    found = [g for g in GENERATORS if g in record]
    if len(found) != 1:
        raise ValueError(f"{FILES['generation']} names {found or 'no'} generator; expected one of {GENERATORS}")
    settings = record.get("settings", record.get("defaults", {}))  # format 1: "defaults"
    return found[0], dict(record[found[0]]), GenerationSettings.from_dict(settings)


def model_card(training: dict, encoders: dict, generation: dict) -> str:
    """README.md with the hub's YAML header (huggingface_hub ModelCardData) and the facts a user checks first."""
    from huggingface_hub import ModelCardData

    generator, model, _ = read_generation(generation)
    full, v2a = model.get("model") == "full", generator == "audioldm"
    data = ModelCardData(library_name="mfm-mapper", tags=["video-to-audio", "audio-generation", generator,
                                                         "v2a-mapper" if v2a else "mfm-mapper"],
                         base_model=model.get("checkpoint") if full else None)
    tr = training
    best = tr.get("best") or {}
    title = "V2A-Mapper" if v2a else "MFM-Mapper"
    what = ("CLIP image features -> a V2A-Mapper -> one CLAP embedding -> AudioLDM (Wang et al., *V2A-Mapper*, "
            "AAAI 2024), " if v2a else "CAVP + TimeChat visual features -> a GPT-2 mapper -> AudioLDM-2 ")
    lines = ["---", data.to_yaml(), "---", "", f"# {title} pipeline{'' if full else ' (tiny demo models)'}", "",
             f"Sound for silent videos: {what}"
             "(Chen et al., *Efficient Video-to-Audio Generation via Multiple Foundation Models Mapper*, "
             "arXiv 2509.04957).", "", "```python", "from infer.pipeline import MFMMapperPipeline", "",
             "pipe = MFMMapperPipeline.from_pretrained(\"<this repo or folder>\")",
             "out = pipe(\"clip.mp4\", prompt=\"dog barking\", output_dir=\"out\")",
             "audio, sample_rate = out.audios[0], out.sample_rate", "```", "", "## Training", ""]
    facts = [("data", tr.get("data_summary")), ("train / validation clips",
              f"{tr.get('train_rows')} / {tr.get('val_rows')}" if tr.get("train_rows") is not None else None),
             ("epochs", f"{tr.get('epochs_done')} of {tr.get('epochs')} (weights of epoch {best.get('epoch')}, "
                        f"the checkpoint {tr.get('checkpoint')!r})" if tr.get("epochs_done") is not None else None),
             ("validation MSE (teacher forced)", _num(best.get("tf_mse", best.get("val_loss")))),
             ("validation MSE (autoregressive)", _num(best.get("ar_mse"))),
             ("mean-token baseline MSE", _num(best.get("base_mse"))),
             ("mapper", tr.get("mapper_summary"))]
    lines += ["| | |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in facts if v is not None]
    lines += ["", "## Encoders it was trained on", "", "| encoder | model | weights |", "| --- | --- | --- |"]
    for name, e in encoders["encoders"].items():
        ids = ", ".join(f"{k}: {v['name']}" for k, v in e["identity"].items() if v) or \
            f"seeded random (seed {e['params'].get('seed', 0)})"
        lines.append(f"| {name} | {e['params'].get('model', 'full')} | {ids} |")
    d = generation["settings"]
    negative = "" if v2a else f"negative prompt \"{d['negative_prompt']}\", "
    lines += ["", "## Generation defaults", "",
              f"{'AudioLDM' if v2a else 'AudioLDM-2'} `{model.get('checkpoint') if full else 'tiny (seeded random)'}`, "
              f"{d['scheduler'].upper()} {d['steps']} steps, guidance {d['guidance']}, {negative}seed "
              f"{d['seed']}, {d['audio_seconds']} s per 10 s window ({d['overlap']} s crossfaded overlap for "
              "longer videos)."]
    metrics = tr.get("metrics")
    lines += ["", "## Evaluation", ""]
    if metrics:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {_num(m.get('value')) if m.get('status') == 'ok' else m.get('status')} |"
                  for k, m in metrics.items()]
    else:
        lines.append("Not evaluated with this checkpoint (run `v2a run evaluate` before `v2a export`).")
    return "\n".join(lines) + "\n"


def _num(v: Any) -> str | None:
    return None if v is None else f"{float(v):.5g}"
