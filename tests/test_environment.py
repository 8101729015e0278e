"""The pip and conda environments must not drift apart, and the set-up must stay CPU-safe."""
from __future__ import annotations

import re

import yaml

from helpers import paths


def _pins(lines):
    return {m.group(1).lower(): m.group(2) for line in lines
            if (m := re.match(r"\s*([A-Za-z0-9_.\-]+)==([^\s#]+)", line))}


def test_environment_yml_equals_requirements_txt():
    req = _pins((paths.root() / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((paths.root() / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip) == req, "environment.yml and requirements.txt disagree"


def test_every_requirement_is_pinned_and_torch_is_the_cpu_file():
    lines = [l for l in (paths.root() / "requirements.txt").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert all("==" in l for l in lines), [l for l in lines if "==" not in l]
    assert "torch==2.13.0" in lines
    gpu_only = {"unsloth", "bitsandbytes", "vllm"}
    assert not gpu_only & set(_pins(lines)), "GPU extras belong in requirements-gpu.txt"
