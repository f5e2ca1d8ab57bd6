"""The layer's lock: exact, complete for the functions' platform, and what these tests are running on."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "core"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)$")
# The functions' runtime, where the lock's markers are judged: Lambda python3.12 on arm64.
LAMBDA_ENVIRONMENT: dict[str, str] = {
    **{key: str(value) for key, value in default_environment().items()},
    "python_version": "3.12",
    "python_full_version": "3.12.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "aarch64",
    "os_name": "posix",
    "extra": "",
}


def requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def lock() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in requirement_lines(LAYER / "requirements.txt"):
        match = PIN.match(line)
        assert match, f"{line!r} in the lock is not an exact name==version pin"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{name} is pinned twice"
        pins[name] = Version(match.group(2))
    return pins


def test_the_lock_pins_every_package_exactly() -> None:
    assert len(lock()) >= 8


@pytest.mark.parametrize("name", sorted(lock()))
def test_the_installed_version_is_the_locked_one(name: str) -> None:
    try:
        installed = Version(metadata.version(name))
    except metadata.PackageNotFoundError:
        pytest.fail(f"{name} is in the layer's lock but not installed here: run `make install`")
    assert installed == lock()[name], (
        f"{name} {installed} is installed but the layer is locked to {lock()[name]}: "
        "run `make install` (or `make lock` to lock what is installed)"
    )


def test_every_layer_requirement_is_locked_within_its_range() -> None:
    pins = lock()
    for line in requirement_lines(LAYER / "requirements.in"):
        wanted = Requirement(line)
        name = canonicalize_name(wanted.name)
        assert name in pins, f"{wanted.name} is in requirements.in but not in the lock: run `make lock`"
        assert wanted.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {wanted}"


def test_the_lock_is_closed_on_the_functions_runtime() -> None:
    """The layer is installed with --no-deps: every dependency of a locked package must be locked too."""
    pins = lock()
    missing: list[str] = []
    for name in pins:
        for text in metadata.requires(name) or []:
            needed = Requirement(text)
            if needed.marker is not None and not needed.marker.evaluate(LAMBDA_ENVIRONMENT):
                continue
            dependency = canonicalize_name(needed.name)
            if dependency not in pins:
                missing.append(f"{name} needs {needed} (not locked)")
            elif not needed.specifier.contains(pins[dependency], prereleases=True):
                missing.append(f"{name} needs {needed} but {dependency}=={pins[dependency]} is locked")
    assert missing == [], "run `make lock`:\n" + "\n".join(missing)


def test_the_project_installs_what_the_layer_carries() -> None:
    """The dev install and the layer name the same run-time packages, so the tests import what deploys."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {canonicalize_name(Requirement(text).name) for text in project["dependencies"]}
    layer = {canonicalize_name(Requirement(line).name) for line in requirement_lines(LAYER / "requirements.in")}
    assert layer - declared == set(), "add these to pyproject.toml's dependencies"


def test_sam_builds_the_layer_from_the_lock_alone() -> None:
    """`sam build` runs the layer's Makefile (no Docker, no local 3.12), which installs the lock and nothing else."""
    template = yaml_parse((ROOT / "template.yaml").read_text(encoding="utf-8"))
    layer = template["Resources"]["CoreLayer"]
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert layer["Properties"]["ContentUri"].rstrip("/") == "layers/core"
    makefile = (LAYER / "Makefile").read_text(encoding="utf-8")
    target = makefile.split("\nbuild-CoreLayer:", 1)[1].split("\n\n", 1)[0]
    for flag in ("-r requirements.txt", "--no-deps", "--only-binary=:all:", "--python-version 3.12"):
        assert flag in target or flag in makefile.split("\nbuild-CoreLayer:", 1)[0], f"{flag} missing"
