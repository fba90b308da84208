"""``v2a export OUT_DIR``: the trained run as a portable pipeline folder (``infer.hub`` layout).

The folder records the encoders of the configuration the mapper was trained with, so the train stage must be
fresh for that configuration (otherwise the record could name encoders the mapper never saw). It also reads the
run's summary, the checkpoint's validation row, the cache's split counts and, when the evaluate stage is fresh for
the same checkpoint, its metrics, for the model card. Generation from the folder needs none of these again.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from infer import hub
from infer.core import feature_names, generator_for
from infer.generate import GenerateParams, mapper_checkpoint
from infer.pipeline import MFMMapperPipeline, save_folder
from v2a.config import Config
from v2a.io import InputError, check_folder, folder_lock, read_json
from v2a.logfmt import g5

log = logging.getLogger(__name__)


def configured_encoders(cfg: Config, names: list[str], target: str = "audiomae") -> dict:
    """The ``encoders.json`` record of the encoders ``cfg`` configures (frames params, ``names``, the ``target``:
    AudioMAE, or CLAP for a V2A-Mapper)."""

    frames = dataclasses.asdict(cfg.stage("frames").settings)
    rec = {"frames": frames, "encoders": {}, "target": {}}
    for n in names:
        rec["encoders"][n] = hub.encoder_record(cfg.stage(n).params, cfg.stage(n).checkpoints)
    if target in cfg.stages:
        spec = cfg.stage(target)
        rec["target"][target] = hub.encoder_record(spec.params, spec.checkpoints)
    return rec


def training_facts(cfg: Config, ckpt: Path, which: str) -> dict:
    """What the model card says: data, epochs, the checkpoint's validation row, evaluation metrics if fresh."""
    from trainer.checkpoint import read_checkpoint

    manifest = read_checkpoint(ckpt, with_optimizer=False)["manifest"]
    summary_path = ckpt.parent / "summary.json"
    summary = read_json(summary_path) if summary_path.is_file() else {}
    history = manifest.get("history") or []
    facts = {"checkpoint": which, "epochs": manifest["config"].get("epochs"),
             "epochs_done": summary.get("epochs_done", manifest.get("epoch")), "step": manifest.get("step"),
             "best": {"epoch": manifest.get("epoch"), **(history[-1] if history else {})},
             "train_rows": summary.get("train_rows"), "val_rows": summary.get("val_rows"),
             "train_params": manifest["config"], "data_summary": _data_summary(cfg),
             "mapper_summary": _mapper_summary(manifest["mapper"]), "metrics": _metrics(cfg, which)}
    facts["best"].pop("tf_cos_per_token", None)
    facts["best"].pop("ar_cos_per_token", None)
    return facts


def _data_summary(cfg: Config) -> str | None:
    if not cfg.zarr_path.exists():
        return None
    from pipeline import cache

    meta = cache.read_meta(cache.open_store(cfg.zarr_path, "r"))
    ok = meta["status"] == ""
    splits = ", ".join(f"{int(((meta['split'] == s) & ok).sum())} {s}" for s in sorted(set(meta["split"][ok])))
    labels = len(set(meta["label"][ok]) - {""})
    where = "/".join(Path(str(cfg.paths.get("videos"))).parts[-2:])  # no absolute path in a public card
    return f"{where}: {int(ok.sum())} clips ({splits}), {labels} labels"


def _mapper_summary(spec: dict) -> str:
    if spec.get("kind", "").startswith("v2a_"):
        return (f"V2A-Mapper {spec['kind'][4:]}, {spec['layers']} x {spec['width']}, CLIP {spec['clip_steps']} x "
                f"{spec['clip_dim']} -> {spec['n_tokens']} x {spec['target_dim']} CLAP")
    g = spec["gpt2_config"]
    return (f"GPT-2 {g['n_layer']} x {g['n_embd']}, encoders {spec['encoders']}, fusion {spec['fusion']}, "
            f"{spec['n_tokens']} x {spec['target_dim']} tokens")


def _metrics(cfg: Config, which: str) -> dict | None:
    """The evaluate stage's metrics when they belong to this checkpoint (stage fresh, same ``mapper``)."""
    from v2a.runner import Runner

    if "evaluate" not in cfg.stages or cfg.stage("generate").params.get("mapper", "best") != which:
        return None
    try:
        fresh, _ = Runner(cfg).status("evaluate")
    except (RuntimeError, FileNotFoundError, ValueError):
        return None
    path = cfg.evaluation_dir / "metrics.json"
    if not fresh or not path.is_file():
        return None
    return {k: {"status": m.get("status"), "value": m.get("value")} for k, m in read_json(path)["metrics"].items()}


def pipeline_parts(cfg: Config, which: str = "best", device: str = "cpu") -> dict:
    """The run's mapper and everything recorded with it: the keyword arguments of ``save_folder``."""
    from trainer.mapper import load_mapper

    p: GenerateParams = cfg.stage("generate").settings
    ckpt = mapper_checkpoint(cfg.mapper_dir, which)
    mapper = load_mapper(ckpt, device=device)
    generator = generator_for(mapper.spec.kind)
    target = "clap" if generator == "audioldm" else "audiomae"
    return {"mapper": mapper, "encoders": configured_encoders(cfg, feature_names(mapper.spec), target),
            "model_params": p.model_params(generator), "settings": p.settings(),
            "training": training_facts(cfg, ckpt, which)}


USE_MAPPER = ("pass --mapper DIR_OR_ID (a pipeline folder written by `v2a export`, or a hub id), "
              "or train one with this configuration first (`v2a run train`)")


def check_trained(cfg: Config, hint: str = USE_MAPPER) -> None:
    """Refuse a run whose train stage is not fresh, in one line that says what to do instead (``hint``)."""
    from v2a.runner import Runner

    fresh, why = Runner(cfg).status("train")
    if fresh:
        return
    if why == ["never run"]:
        raise RuntimeError(f"no trained mapper in {cfg.mapper_dir}: {hint}")
    raise RuntimeError(f"the mapper in {cfg.mapper_dir} is not up to date for this configuration "
                       f"({'; '.join(why)}): {hint}")


def export_run(cfg: Config, out: Path, which: str = "best") -> Path:
    """Write the pipeline folder of the trained run to ``out``; returns it.

    One export writes a folder at a time (its lock, ``.<name>.lock`` beside it, is taken before anything is read or
    written). ``out`` must be a new or empty folder, or an earlier export (its files only): an export never writes
    its files among someone else's. ``model_index.json`` is removed before the new files are written and written
    last, so an export stopped half-way is never taken for a complete folder."""
    if which not in ("best", "last"):
        raise ValueError(f"export: checkpoint {which!r} is not 'best' or 'last'")
    out = check_folder(out, "the pipeline folder to export to")
    with folder_lock(out, "the pipeline export"):
        check_not_foreign(out)
        check_trained(cfg, "nothing to export; train one with this configuration first (`v2a run train`), or use an "
                           "exported folder or hub id as it is (v2a generate --mapper DIR_OR_ID)")
        parts = pipeline_parts(cfg, which)
        (out / hub.INDEX).unlink(missing_ok=True)
        folder = save_folder(out, **parts)
    best = parts["training"]["best"]
    log.info("exported the %s mapper (epoch %s, validation MSE %s) to %s", which, best.get("epoch"),
             g5(best.get("tf_mse", best.get("val_loss"))), folder)
    return folder


def check_not_foreign(out: Path) -> None:
    """InputError when ``out`` holds anything but the files of a pipeline folder (and their temporary files)."""
    if not out.is_dir():
        return
    ours = {hub.INDEX} | {f.split("/")[0] for f in hub.FILES.values()}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ours and not p.name.startswith("."))
    if foreign:
        raise InputError(f"export: {out} already holds files that are not a pipeline folder's ({', '.join(foreign[:3])}"
                         f"{', ...' if len(foreign) > 3 else ''}); name a new or empty folder, or an earlier export")


def pipeline_from_run(cfg: Config, which: str = "best", device: str = "cpu") -> MFMMapperPipeline:
    """The pipeline of the trained run itself (what ``v2a generate`` without ``--mapper`` uses)."""
    from infer.core import build_generator

    check_trained(cfg)
    parts = pipeline_parts(cfg, which, device)
    model = build_generator(generator_for(parts["mapper"].spec.kind), parts["model_params"], device=device)
    return MFMMapperPipeline(parts.pop("mapper"), model, device=device, **parts)

