"""Launch configurations: the dev container, Binder, and the README that points to them."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def devcontainer() -> dict:
    return json.loads((ROOT / ".devcontainer" / "devcontainer.json").read_text())


def test_devcontainer_installs_the_course_and_starts_the_broker():
    config = devcontainer()
    assert config["postCreateCommand"] == "make setup"
    assert "labsupport broker up" in config["postStartCommand"]
    assert any("docker-in-docker" in feature for feature in config["features"])
    assert 8888 in config["forwardPorts"]


def test_devcontainer_python_matches_what_the_course_supports():
    image = devcontainer()["image"]
    version = re.search(r"python:\d+-(3\.\d+)", image).group(1)
    minimum = re.search(r'requires-python = ">=(3\.\d+)"',
                        (ROOT / "pyproject.toml").read_text()).group(1)
    assert tuple(map(int, version.split("."))) >= tuple(map(int, minimum.split(".")))


def test_binder_installs_the_pinned_requirements_and_the_package():
    lines = (ROOT / "binder" / "requirements.txt").read_text().splitlines()
    assert "-r ../requirements.txt" in lines
    assert (ROOT / "binder" / "../requirements.txt").resolve().exists()
    post = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install --no-deps -e ." in post
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    assert runtime == f"python-{sys.version_info.major}.{sys.version_info.minor}"


def test_binder_scripts_are_executable_and_valid_bash():
    for name in ("postBuild", "start"):
        path = ROOT / "binder" / name
        assert os.access(path, os.X_OK), f"binder/{name} must be executable"
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def test_binder_start_uses_the_embedded_broker_then_runs_jupyter(tmp_path):
    start = (ROOT / "binder" / "start").read_text()
    assert "LAB_BROKER=embedded" in start
    assert start.rstrip().endswith('exec "$@"')


def test_readme_links_every_launch_option_and_the_guides():
    readme = (ROOT / "README.md").read_text()
    for needle in (".devcontainer/", "binder/", "mybinder.org", "INSTRUCTORS.md",
                   "BENCHMARKS.md", "make bench"):
        assert needle in readme, needle
