"""A stand-in for the docker CLI, enough for deploy/compose-rolling-redeploy.sh.

State lives in $FAKE_DOCKER_STATE (JSON): ``running`` (container ids of the
service, in order), ``health`` (id -> list of states reported one per inspect,
the last repeating), ``new_health`` (that list for containers ``up`` creates),
``stop_timeout`` and ``calls`` (every argv, for the test to read).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    path = Path(os.environ["FAKE_DOCKER_STATE"])
    state = json.loads(path.read_text())
    state["calls"].append(argv)
    try:
        return run(state, argv)
    finally:
        path.write_text(json.dumps(state))


def run(state: dict, argv: list[str]) -> int:  # type: ignore[type-arg]
    if argv[:2] == ["compose", "version"]:
        return 0
    if argv[:2] == ["compose", "ps"]:
        print("\n".join(state["running"]))
        return 0
    if argv[:2] == ["compose", "build"]:
        return 0
    if argv[:2] == ["compose", "up"]:
        scale = next(a for a in argv if "=" in a and a.split("=")[0] == argv[-1])
        want = int(scale.split("=")[1])
        while len(state["running"]) < want:
            new = f"new{len(state['running'])}"
            state["running"].append(new)
            state["health"][new] = list(state["new_health"])
        return 0
    if argv[0] == "inspect":
        fmt, container = argv[2], argv[3]
        if "StopTimeout" in fmt:
            print(state.get("stop_timeout", ""))
            return 0
        states = state["health"].get(container)
        if not states:
            print(f"Error: No such object: {container}", file=sys.stderr)
            return 1
        print(states.pop(0) if len(states) > 1 else states[0])
        return 0
    if argv[0] in ("stop", "rm"):
        ids = [a for a in argv[1:] if not a.startswith("--") and not a.isdigit()]
        state["running"] = [c for c in state["running"] if c not in ids]
        return 0
    print(f"fake docker: unexpected {argv}", file=sys.stderr)
    return 99


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
