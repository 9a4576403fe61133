"""Print pip constraints that pin every direct dependency of pyproject.toml (runtime and every extra) to its
declared floor: ``name>=X`` becomes ``name==X``. ``make floors`` installs the test extra under them."""

import re
from pathlib import Path

import tomllib

FLOOR = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*>=\s*([^\s;,]+)\s*(?:;.*)?$")

project = tomllib.loads(Path(__file__).resolve().parent.parent.joinpath("pyproject.toml").read_text())["project"]
requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
floors = {}
for requirement in requirements:
    found = FLOOR.match(requirement)
    if found is None:
        if ">" in requirement or "=" in requirement:
            raise SystemExit(f"pyproject.toml: cannot read the floor of {requirement!r} (write name>=version)")
        continue  # the project's own extras
    name, version = found.groups()
    floors[name.lower()] = version
print("\n".join(f"{name}=={version}" for name, version in sorted(floors.items())))
