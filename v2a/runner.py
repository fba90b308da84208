"""The stage runner: decides which stages are stale, runs them in order, records what they produced.

A stage is *fresh* when the fingerprint recorded with its output equals the fingerprint computed now from
  - its own ``params`` (not its ``runtime`` options: workers, batch size, device),
  - its code: the content of every project file its module imports, transitively (v2a/code.py),
  - the identity of every checkpoint it loads (local file: path/size/mtime; hub id: the id itself),
  - its inputs: raw input files for the frames stage, the *current* fingerprints of its upstream stages.
Changing one encoder's params therefore makes that encoder and what reads it (train, generate) stale,
and nothing else.

A stage is also stale while any stage it needs is stale or incomplete (``upstream train stale``), transitively: its
recorded output was made from upstream outputs that are no longer those on disk (another mapper trained into
the same run folder, a cache half rewritten), so it cannot be shown as fresh.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from v2a.check import format_problems, preflight
from v2a.context import (Fingerprint, PreflightError, StageContext, Stages, checkpoint_identity,  # noqa: F401
                         input_problems, path_identity, resolved_params, stage_module)

log = logging.getLogger(__name__)


class Runner(Stages):
    def own_status(self, name: str) -> tuple[bool, list[str]]:
        """(fresh, reasons) judged by this stage's record alone: its fingerprint and completeness."""
        rec = self.recorded(name)
        fp = self.fingerprint(name)
        if rec and not rec.get("complete", False):
            reasons = [rec.get("progress") or "incomplete"]
            if rec.get("fingerprint") not in (None, fp.value):
                reasons = fp.diff(rec) + reasons
            return False, reasons
        reasons = fp.diff(rec)
        return not reasons, reasons

    def status(self, name: str) -> tuple[bool, list[str]]:
        """(fresh, reasons): the stage's own status, plus ``upstream X stale`` for each stage X it needs that is
        stale or incomplete, itself or further up (left out when ``input X changed`` already names X, and for a
        stage that never ran: that says it all)."""
        return self._status(name, {})

    def statuses(self, names: list[str]) -> dict[str, tuple[bool, list[str]]]:
        """``status`` of several stages, each record read once."""
        seen: dict[str, tuple[bool, list[str]]] = {}
        return {n: self._status(n, seen) for n in names}

    def _status(self, name: str, seen: dict[str, tuple[bool, list[str]]]) -> tuple[bool, list[str]]:
        if name not in seen:  # each stage's record is read once per question
            reasons = list(self.own_status(name)[1])
            for up in self.cfg.stage(name).needs:
                if not self._status(up, seen)[0] and f"input {up} changed" not in reasons \
                        and reasons != ["never run"]:
                    reasons.append(f"upstream {up} stale")
            seen[name] = (not reasons, reasons)
        return seen[name]

    def problems(self, names: list[str] | None = None) -> list[str]:
        """What stops the stages (default: all) from running, one line each, without running anything.

        Every stage's ``inputs`` are checked here; a stage module may add its own checks (weights, devices...)
        with an optional ``problems(ctx) -> list[str]`` function.
        """
        out: list[str] = []
        for name in self.cfg.closure(names) if names else self.cfg.order():
            spec = self.cfg.stage(name)
            for key in spec.inputs:
                out += [p for p in input_problems(self.cfg, name, key) if p not in out]
            hook = getattr(stage_module(spec), "problems", None)
            if hook is not None:
                out += [p for p in hook(self.context(name)) if p not in out]
        return out

    def preflight(self, names: list[str]) -> None:
        """Raise PreflightError with the table of every problem of the stages ``names`` (none: return)."""
        if not names:
            return
        t0 = time.time()
        problems = preflight(self.cfg, names)
        log.info("preflight of %s: %d problem(s) in %.1f s", ", ".join(names), len(problems), time.time() - t0)
        if problems:
            first = problems[0]
            raise PreflightError(f"preflight found {len(problems)} problem(s), nothing was run; first: {first.stage} "
                                 f"{first.item}: {first.problem}\n{format_problems(problems)}")

    def run(self, names: list[str], *, force: bool = False, only: bool = False, check: bool = True,
            **kw: Any) -> list[str]:
        """Run the named stages/targets (and their stale upstream stages unless ``only``); returns those run.
        ``check``: first the preflight (v2a/check.py) of every stage that will run; any problem stops it all."""
        order = [n for n in names] if only else self.cfg.closure(names)
        self._fp.clear()  # inputs may have changed since this runner last looked
        if check:  # what will run: a stage whose own record is stale (a stale upstream in `order` runs first)
            self.preflight([n for n in order if (force and (only or n in names)) or not self.own_status(n)[0]])
        ran = []
        for name in order:
            fresh, reasons = self.status(name)
            forced = force and (only or name in names)
            if fresh and not forced:
                log.info("stage %-9s up to date (%s)", name, self.fingerprint(name).value)
                continue
            for up in self.cfg.stage(name).needs:
                up_fresh, up_reasons = self.status(up)
                if not up_fresh:
                    raise RuntimeError(
                        f"stage {name} needs {up}, which is stale ({'; '.join(up_reasons)}): "
                        f"run `v2a stage {up}` (or `v2a run {name}`) first"
                    )
            why = "forced" if forced else ", ".join(reasons)
            log.info("stage %-9s running (%s)", name, why)
            ctx = self.context(name, force=forced, **kw)
            t0 = time.time()
            stage_module(ctx.spec).run(ctx)
            log.info("stage %-9s finished in %.1f s", name, time.time() - t0)
            ran.append(name)
            # Downstream fingerprints depend on this stage's; recompute lazily.
            self._fp.clear()
        return ran
