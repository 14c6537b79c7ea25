"""The hosted CI workflow: actionlint finds nothing, and its jobs run what they promise."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def actionlint() -> str:
    found = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    assert Path(found).exists(), "actionlint is missing: it is pinned in requirements.txt"
    return found


def test_actionlint_passes_the_workflow():
    done = subprocess.run([actionlint(), "-no-color", str(WORKFLOW)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path):
    broken = WORKFLOW.read_text().replace("runs-on: ubuntu-24.04", "runs-on: [", 1)
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    path = tmp_path / ".github" / "workflows" / "ci.yml"
    path.write_text(broken)
    done = subprocess.run([actionlint(), "-no-color", str(path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0


def test_jobs_run_make_test_and_the_notebooks_on_the_kafka_container():
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    steps = " ".join(str(s.get("run", "")) for s in jobs["test"]["steps"])
    assert "bash .ci/run" in steps
    kafka = jobs["kafka"]["steps"]
    assert any(s.get("env", {}).get("LAB_BROKER") == "container" and "broker up" in s["run"]
               for s in kafka)
    assert any("--nbval-lax" in str(s.get("run", "")) and "notebooks solutions" in s["run"]
               for s in kafka)
    assert jobs["python-versions"]["strategy"]["matrix"]["python"] == ["3.12", "3.13"]


def test_every_test_file_the_workflow_names_exists():
    named = re.findall(r"tests/[\w/]+\.py", WORKFLOW.read_text())
    assert named and [p for p in named if not (ROOT / p).exists()] == []


def test_the_readme_shows_the_badge():
    assert "actions/workflows/ci.yml/badge.svg" in (ROOT / "README.md").read_text()
