"""deploy/Dockerfile, read as text: one slim image, non-root, no build tools in the final stage."""

from __future__ import annotations

import json
import re

import pytest

from .roles import REPO

DOCKERFILE = REPO / "deploy" / "Dockerfile"
IGNORE = REPO / "deploy" / "Dockerfile.dockerignore"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    kept = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    logical = re.sub(r"\\\n", " ", "\n".join(kept))
    pairs = []
    for line in logical.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


@pytest.fixture(scope="module")
def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions(DOCKERFILE.read_text()):
        if instruction[0] == "FROM":
            found.append([])
        assert found, "an instruction before the first FROM"
        found[-1].append(instruction)
    return found


def test_final_stage_is_slim_python_311(stages: list[list[tuple[str, str]]]) -> None:
    base = stages[-1][0][1]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base


def test_runs_as_a_non_root_user(stages: list[list[tuple[str, str]]]) -> None:
    users = [args for word, args in stages[-1] if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_no_build_tools_in_the_final_stage(stages: list[list[tuple[str, str]]]) -> None:
    runs = " ".join(args for word, args in stages[-1] if word == "RUN")
    for tool in ("apt-get", "apk ", "gcc", "build-essential", "make ", "git "):
        assert tool not in runs, tool
    assert "--no-index" in runs  # only the wheels made in the build stage
    assert "--only-binary=:all:" in " ".join(args for word, args in stages[0] if word == "RUN")


def test_entrypoint_is_zasgi_for_both_roles(stages: list[list[tuple[str, str]]]) -> None:
    final = dict(stages[-1])
    assert json.loads(final["ENTRYPOINT"]) == ["zasgi"]
    assert final["STOPSIGNAL"] == "SIGTERM"
    assert set(final["EXPOSE"].split()) == {"8000", "7000"}


def test_copied_paths_exist_and_are_in_the_build_context(stages: list[list[tuple[str, str]]]) -> None:
    kept = {line.strip("!/") for line in IGNORE.read_text().splitlines() if line.startswith("!")}
    for stage in stages:
        for word, args in stage:
            if word == "COPY" and "--from" not in args:
                sources = [a for a in args.split() if not a.startswith("--")][:-1]
                for source in sources:
                    assert (REPO / source).exists(), source
                    assert source.rstrip("/") in kept, f"{source} is excluded by {IGNORE.name}"
