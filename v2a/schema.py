"""Strict configuration: the merged ``stages.yaml`` (+ overlays, + ``--set``) checked against typed models.

The top level, ``paths`` and each stage's keys are checked here; each stage's ``params`` and ``runtime`` are
checked against the ``Params`` and ``Runtime`` models that the stage's own module defines (found through its
``module:``, imported like the runner does). A model is a pydantic ``BaseModel`` or a dataclass (pydantic
validates both; constraints go in the type: ``Literal[...]``, ``Annotated[int, Field(ge=1)]``); unknown keys are
found here, so a model needs nothing from ``v2a`` (a stage's code fingerprint holds the files it imports). Adding
a parameter to a stage is one line: a field with its type and default in that stage's model.

Every problem is one line naming the key: an unknown key with the closest valid key (difflib), a wrong type or
value with the value and what is allowed. All problems are collected and raised together as a
:class:`ConfigError`. After validation ``params``/``runtime`` hold every field, defaults filled in; a key that a
stage's ``Runtime`` declares is never part of its (fingerprinted) ``params``.

Settings that must agree across stages (the frames' clip grid and what each encoder, the trainer... can read) are
checked last, once every stage is valid: a stage module may define ``agree(name, params) -> list[str]``, called
with its stage's name and every stage's validated ``Params`` by stage name; each string is one problem line.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

TOP_LEVEL = ("paths", "targets", "stages", "experiments")
TYPED = ("settings", "options")  # StageSpec fields the validation fills in (a config may not set them)


class ConfigError(ValueError):
    """A user error in the configuration; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass
class StageSpec:
    name: str
    module: str  # python module with run(ctx)
    needs: list[str] = field(default_factory=list)  # upstream stages
    uses: list[str] = field(default_factory=list)  # stages whose settings (params, checkpoints; not outputs) this
    # stage computes with too: part of its fingerprint, read as ctx.uses(name) (the dynamics stage: generate, evaluate)
    inputs: list[str] = field(default_factory=list)  # names under `paths` that are raw inputs (frames stage)
    checkpoints: list[str] = field(default_factory=list)  # keys of params that name weights (paths or hub ids)
    params: dict[str, Any] = field(default_factory=dict)  # fingerprinted: changing them reruns the stage
    runtime: dict[str, Any] = field(default_factory=dict)  # not fingerprinted: workers, batch size, device
    description: str = ""
    # Set when the configuration is validated, never by the user: the stage module's validated ``Params`` and
    # ``Runtime`` instances (what its code receives as ``ctx.params`` / ``ctx.runtime``; ``params`` and ``runtime``
    # above are their plain JSON form, fingerprinted and recorded). A module without a model gets its mapping.
    settings: Any = field(default=None, repr=False, compare=False)
    options: Any = field(default=None, repr=False, compare=False)


class Options(BaseModel):
    """A section whose unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")


class Paths(Options):
    """``paths``: named locations, relative to the first config file's folder."""

    videos: str | None = None  # folder of videos or webdataset .tar shards
    labels: str | None = None  # VGGSound-style CSV (optional)
    cache: str | None = None  # frames shards + features.zarr
    runs: str | None = None  # mapper checkpoints
    outputs: str | None = None  # generated audio, videos, evaluation
    train_ids: str | None = None  # optional id list to train on (trainer/subset.py)


class Experiments(Options):
    """``experiments``: named runs (lab/experiments.py)."""

    presets: str = "configs/experiments"  # folder of NAME.yaml presets
    overlay: str | None = None  # a file merged after every preset
    epochs_scale: float = 1.0  # multiplies the presets' train epochs


def field_names(model: type) -> list[str]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    if dataclasses.is_dataclass(model):
        return [f.name for f in dataclasses.fields(model)]
    raise TypeError(f"{model!r} is neither a pydantic model nor a dataclass")


def closest(name: Any, valid: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    return found[0] if found else None


def _hint(name: Any, valid: list[str]) -> str:
    near = closest(name, valid)
    return f"did you mean {near!r}?" if near else f"valid: {', '.join(valid) or '(none)'}"


def unknown_key(where: str, key: Any, valid: list[str], what: str = "key") -> str:
    """``stages.cavp.params.windoww: unknown key (did you mean 'window'?)``"""
    return f"{where}{key}: unknown {what} ({_hint(key, valid)})"


def unknown_ref(where: str, value: Any, valid: list[str], what: str) -> str:
    """``stages.train.needs: unknown stage 'cavpp' (did you mean 'cavp'?)``"""
    return f"{where}: unknown {what} {value!r} ({_hint(value, valid)})"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format(where: str, err: dict) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:
        return f"{where.rstrip('.')}: {msg}"
    if err["type"] == "missing":
        return f"{where}{loc}: required, missing"
    msg = msg[0].lower() + msg[1:] if msg else msg
    return f"{where}{loc}: got {_short(err['input'])}; {msg}"


def from_known_keys(cls: type, data: dict, where: str, **fixed: Any) -> Any:
    """``cls(**fixed, **data)`` for a dataclass; a key of ``data`` that is not one of its fields is a ValueError
    naming ``where`` (a typo must not be ignored)."""
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    return cls(**fixed, **data)


def validate(where: str, data: Any, model: type) -> tuple[Any, list[str]]:
    """Validate ``data`` against ``model``: (the model instance, problems). ``where`` ends with '.'."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None, [f"{where.rstrip('.')}: got {_short(data)}; expected a mapping of keys to values"]
    valid = field_names(model)
    problems = [unknown_key(where, k, valid) for k in data if k not in valid]
    if problems:
        return None, problems
    try:
        value = TypeAdapter(model).validate_python(data)
    except ValidationError as e:
        return None, [_format(where, err) for err in e.errors()]
    except (TypeError, ValueError) as e:  # raised by a model's own checks outside pydantic
        return None, [f"{where.rstrip('.')}: {e}"]
    problems = [p for k, v in data.items() for p in bool_mismatches(f"{where}{k}", v, _field(value, k))]
    return (None, problems) if problems else (value, [])


def _field(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else getattr(value, key, None)


def bool_mismatches(where: str, given: Any, got: Any) -> list[str]:
    """Booleans are not numbers: pydantic reads ``seconds: yes`` (YAML's true) as 1.0 and ``half: 1`` as true; here
    a value given as a boolean must stay one, and a boolean field takes only true or false (lists, tuples and
    mappings: item by item)."""
    if isinstance(given, bool) and not isinstance(got, bool):
        return [f"{where}: got {given}; expected a number ({type(got).__name__}), not true/false (YAML reads yes, no, "
                "on, off as booleans)"]
    if isinstance(got, bool) and not isinstance(given, bool):
        return [f"{where}: got {_short(given)}; expected true or false"]
    if isinstance(given, (list, tuple)) and isinstance(got, (list, tuple)) and len(given) == len(got):
        return [p for i, (a, b) in enumerate(zip(given, got)) for p in bool_mismatches(f"{where}[{i}]", a, b)]
    if isinstance(given, dict) and isinstance(got, dict):
        return [p for k, v in given.items() if k in got for p in bool_mismatches(f"{where}.{k}", v, got[k])]
    return []


def as_plain(value: Any) -> dict:
    """A validated model instance as the plain JSON mapping that is fingerprinted and recorded."""
    return TypeAdapter(type(value)).dump_python(value, mode="json")


def with_values(value: Any, **updates: Any) -> Any:
    """A copy of a validated model instance (pydantic model or dataclass) with some fields replaced."""
    if not updates:
        return value
    if isinstance(value, BaseModel):
        return value.model_copy(update=updates)
    return dataclasses.replace(value, **updates)


def check(where: str, data: Any, model: type) -> tuple[dict | None, list[str]]:
    """Validate ``data`` against ``model``: (every field as a plain dict, problems). ``where`` ends with '.'."""
    value, problems = validate(where, data, model)
    return (None if problems else as_plain(value)), problems


def stage_models(module_name: str) -> tuple[type | None, type | None]:
    """The ``Params`` and ``Runtime`` models a stage module defines (None: that section is not checked)."""
    mod = importlib.import_module(module_name)
    return getattr(mod, "Params", None), getattr(mod, "Runtime", None)


def _check_stage(name: str, body: Any, modules: dict[str, str]) -> tuple[dict | None, list[str]]:
    where = f"stages.{name}."
    if body is None:
        return None, [f"stages.{name}: is empty (null); expected the stage's mapping (module, needs, params, ...). An "
                      f"overlay's `{name}:` with nothing under it replaces the whole stage: set only the keys you "
                      f"change (stages.{name}.params.KEY: VALUE), or remove the line"]
    if not isinstance(body, dict):
        return None, [f"stages.{name}: got {_short(body)}; expected a mapping (module, needs, params, ...)"]
    if "module" not in body:
        near = closest(name, [n for n in modules if n != name])
        if near:
            return None, [f"stages.{name}: unknown stage (did you mean {near!r}?)"]
        return None, [f"stages.{name}: 'module' (the python module with run(ctx)) is required for a new stage"]
    rest = {k: v for k, v in body.items() if k not in ("params", "runtime")}
    reserved = [unknown_key(where, k, [f for f in field_names(StageSpec) if f not in TYPED], "key")
                for k in rest if k in TYPED]
    if reserved:
        return None, reserved
    spec, problems = check(where, {**rest, "name": name, "params": {}, "runtime": {}}, StageSpec)
    if problems:
        return None, problems
    try:
        params_model, runtime_model_ = stage_models(spec["module"])
    except ImportError as e:
        return None, [f"{where}module: cannot import {spec['module']!r}: {e}"]
    runtime, problems = _section(where + "runtime.", body.get("runtime"), runtime_model_)
    params_raw = body.get("params")
    run_keys = field_names(runtime_model_) if runtime_model_ else []
    if isinstance(params_raw, dict):
        problems += [f"{where}params.{k}: a runtime option; set it under {where}runtime.{k}"
                     for k in params_raw if k in run_keys]
        params_raw = {k: v for k, v in params_raw.items() if k not in run_keys}
    params, more = _section(where + "params.", params_raw, params_model)
    problems += more
    if params_model is not None and params is not None:
        valid = field_names(params_model)
        problems += [unknown_ref(f"{where}checkpoints", k, valid, "params key")
                     for k in spec["checkpoints"] if k not in valid]
    if problems:
        return None, problems
    spec["settings"], spec["options"] = params, runtime
    spec["params"] = {k: v for k, v in (as_plain(params) if params_model else params).items() if k not in run_keys}
    spec["runtime"] = as_plain(runtime) if runtime_model_ else runtime
    return spec, []


def _section(where: str, data: Any, model: type | None) -> tuple[Any, list[str]]:
    """The validated instance of ``model`` (no model: the mapping itself), and the problems."""
    if model is not None:
        return validate(where, data, model)
    if data is not None and not isinstance(data, dict):
        return None, [f"{where.rstrip('.')}: got {_short(data)}; expected a mapping of keys to values"]
    return dict(data or {}), []


def _check_refs(stages: dict, targets: dict) -> list[str]:
    """``needs``, ``uses`` and ``targets`` name stages; ``inputs`` name paths."""
    problems, names, path_names = [], list(stages), field_names(Paths)
    for name, spec in stages.items():
        problems += [unknown_ref(f"stages.{name}.{key}", up, names, "stage")
                     for key in ("needs", "uses") for up in spec[key] if up not in stages]
        problems += [unknown_ref(f"stages.{name}.inputs", p, path_names, "path")
                     for p in spec["inputs"] if p not in path_names]
    for t, members in targets.items():
        problems += [unknown_ref(f"targets.{t}", s, names, "stage") for s in members if s not in stages]
    return problems


def _check_agreement(stages: dict) -> list[str]:
    """Every stage module's optional ``agree(name, params)`` hook, given each stage's validated ``Params``."""
    validated, hooks = {}, []
    for name, spec in stages.items():
        validated[name] = spec["settings"]
        hook = getattr(importlib.import_module(spec["module"]), "agree", None)
        if hook is not None:
            hooks.append((name, hook))
    return [line for name, hook in hooks for line in hook(name, validated)]


def validate_config(raw: dict) -> dict:
    """The merged raw configuration, checked and normalised; raises :class:`ConfigError` listing every problem."""
    problems = [unknown_key("", k, list(TOP_LEVEL), "top-level key") for k in raw if k not in TOP_LEVEL]
    paths, more = check("paths.", raw.get("paths"), Paths)
    problems += more
    problems += check("experiments.", raw.get("experiments") or {}, Experiments)[1]
    try:
        targets = TypeAdapter(dict[str, list[str]]).validate_python(raw.get("targets") or {})
    except ValidationError as e:
        targets = {}
        problems += [_format("targets.", err) for err in e.errors()]
    stages_raw = raw.get("stages") or {}
    if not isinstance(stages_raw, dict):
        raise ConfigError(problems + [f"stages: got {_short(stages_raw)}; expected a mapping of stage names"])
    modules = {n: b.get("module") for n, b in stages_raw.items() if isinstance(b, dict) and "module" in b}
    stages = {}
    for name, body in stages_raw.items():
        spec, more = _check_stage(str(name), body, modules)
        problems += more
        if spec is not None:
            stages[str(name)] = spec
    if not problems:
        problems += _check_refs(stages, targets)
    if not problems:
        problems += _check_agreement(stages)
    if problems:
        raise ConfigError(problems)
    return {"paths": paths, "targets": targets, "stages": stages}
