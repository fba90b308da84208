#!/usr/bin/env bash
# The package as a user installs it: a wheel built from this working tree, installed into a fresh virtual
# environment outside the repository, and `v2a` run from an empty folder (packaged configs, weights manifest and
# data files found; nothing read from the checkout). No GPU, no hub: tiny seeded models.
#
#   bash .ci/install_check.sh            # .ci/run calls it after `make test`
#   TORCH='torch==2.14.1' bash .ci/install_check.sh   # another torch release in the range
#
# PYTHON (default python3) makes the environment; TORCH (default torch==2.13.0, the CPU wheel on this project's
# machines) is installed before the wheel, which must then leave it as it is (pyproject.toml asks for a range);
# KEEP=1 keeps the temporary folder. Everything else comes from the package index.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV
tmp=$(mktemp -d "${TMPDIR:-/tmp}/v2a-install-check.XXXXXX")
if [ "${KEEP:-}" = 1 ]; then echo "keeping $tmp"; else trap 'rm -rf "$tmp"' EXIT; fi
SECONDS=0

step() { printf '\n== [%4ss] %s\n' "$SECONDS" "$*"; }
die() { echo "install check FAILED: $*" >&2; exit 1; }

# expect RC PATTERN CMD...: run CMD, show its output, require exit status RC and a line matching PATTERN
expect() {
  local want=$1 pattern=$2 rc=0
  shift 2
  echo "\$ $*"
  "$@" >"$tmp/out.log" 2>&1 || rc=$?
  sed 's/^/  | /' "$tmp/out.log"
  [ "$rc" = "$want" ] || die "'$*' exited $rc, not $want"
  grep -Eq -- "$pattern" "$tmp/out.log" || die "'$*' printed no line matching '$pattern'"
  if grep -q "Traceback" "$tmp/out.log"; then die "'$*' printed a traceback"; fi
}

step "copy the working tree (tracked and new files, not the ignored ones) to $tmp/src"
mkdir "$tmp/src"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | tar --null -T - --ignore-failed-read -cf -) \
  | tar -xf - -C "$tmp/src"

step "build the wheel"
"$PYTHON" -m pip wheel -q --no-deps -w "$tmp/dist" "$tmp/src"
whl=$(ls "$tmp/dist"/mfm_mapper-*.whl)
echo "$(basename "$whl"): $(du -k "$whl" | cut -f1) KiB"
"$PYTHON" - "$whl" "$tmp/src" <<'EOF' || die "the wheel's package data"
"""Every data file the packages need is in the wheel, with the content of the repository's file (links followed)."""
import sys, zipfile
from pathlib import Path

whl, src = zipfile.ZipFile(sys.argv[1]), Path(sys.argv[2])
names = set(whl.namelist())
want = ["v2a/weights.yaml", "v2a/configs/stages.yaml", "v2a/configs/demo.yaml", "lab/tiny_pipeline.py"]
want += sorted(str(p.relative_to(src)) for p in (src / "infer" / "data").glob("*") if p.is_file())
for name in want:
    if name not in names:
        sys.exit(f"{name} is not in the wheel")
    if whl.read(name) != (src / name).read_bytes():
        sys.exit(f"{name} in the wheel differs from the repository's")
stray = sorted({n.split("/")[0] for n in names} - {"v2a", "frozen", "pipeline", "trainer", "infer", "scoring", "lab"}
               - {n.split("/")[0] for n in names if ".dist-info/" in n})
if stray:
    sys.exit(f"the wheel holds more than the packages: {stray}")
print(f"{len(want)} data files found: {', '.join(want)}")
EOF

step "a fresh virtual environment: $TORCH first, then the wheel"
"$PYTHON" -m venv "$tmp/venv"
py="$tmp/venv/bin/python"
# pip -q, less this machine's notes on its local package index (one line per package)
pip() { "$py" -m pip -q "$@" 2>&1 | { grep -v "^WARNING: Location 'file:.*' is ignored" || true; }; }
torch_version() { "$py" -c "from importlib.metadata import version; print(version('torch'))"; }
pip install --upgrade pip  # as `make install` does
pip install "$TORCH"
before=$(torch_version)
pip install "$whl"
after=$(torch_version)
echo "torch $before before the wheel, $after after it"
[ "$before" = "$after" ] || die "installing the wheel replaced torch $before by $after"

step "v2a from an empty folder"
mkdir "$tmp/empty"
cd "$tmp/empty"
v2a="$tmp/venv/bin/v2a"
where=$("$py" -c "import lab, v2a, infer; print(lab.__file__, v2a.__file__, infer.__file__)")
case "$where" in *"$repo"*) die "the packages were imported from the checkout: $where" ;; esac
echo "packages imported from $tmp/venv: ok"
expect 0 "generate" "$v2a" --help
expect 0 "missing" "$v2a" weights list
expect 1 "demo/videos does not exist" "$v2a" -c demo check
expect 0 "wrote 2 clips" "$v2a" demo-data demo/videos --n 2 --seed 0
expect 0 "check: [0-9]+ stages .*: no problems" "$v2a" -c demo check
expect 0 "wrote a tiny untrained pipeline" "$py" -m lab.tiny_pipeline tiny
clip=$(ls demo/videos/*.mp4 | head -n 1)
id=$(basename "$clip" .mp4)
expect 0 "done 1, skipped 0" "$v2a" --no-progress -c demo generate --mapper tiny "$clip" -o out
for f in "$id.wav" "$id.mp4" "$id.png" "$id.json"; do
  [ -s "out/$f" ] || die "v2a generate did not write out/$f"
done
"$py" - "out/$id.json" <<'EOF' || die "the generated clip"
import json, sys
import soundfile as sf

rec = json.load(open(sys.argv[1]))
audio, sr = sf.read(f"out/{rec['wav']}")
assert sr == 16000 and len(audio) == round(rec["seconds"] * sr), (sr, len(audio), rec["seconds"])
print(f"out/{rec['wav']}: {len(audio) / sr:.2f} s at {sr} Hz; record: {json.dumps(rec, sort_keys=True)}")
EOF

step "install check passed: wheel, fresh environment (torch $after), v2a from an empty folder"
