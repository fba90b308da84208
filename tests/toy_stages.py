"""A toy stage module for runner tests: writes <cache>/<name>.out and its record, counts its runs."""

import json

from v2a.io import atomic_write_json


def _paths(ctx):
    d = ctx.cfg.cache_dir
    return d / f"{ctx.name}.out", d / f"{ctx.name}.record.json", d / f"{ctx.name}.runs"


def read_record(ctx):
    _, rec, _ = _paths(ctx)
    return json.loads(rec.read_text()) if rec.exists() else None


def run(ctx):
    out, rec, runs = _paths(ctx)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = int(runs.read_text()) if runs.exists() else 0
    runs.write_text(str(n + 1))
    out.write_text(json.dumps(ctx.params))
    atomic_write_json(rec, ctx.record())
