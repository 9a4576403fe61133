"""Print pip constraints that pin every direct dependency of pyproject.toml (runtime, every extra and every
dependency group) to its declared floor: ``name>=X`` becomes ``name==X``. ``make floors`` installs the extras and
the test group under them."""

import re
from pathlib import Path

import tomllib

FLOOR = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*>=\s*([^\s;,]+)\s*(?:;.*)?$")

pyproject = tomllib.loads(Path(__file__).resolve().parent.parent.joinpath("pyproject.toml").read_text())
project, groups = pyproject["project"], pyproject["dependency-groups"]
requirements = [
    *project["dependencies"],
    *(r for extra in project["optional-dependencies"].values() for r in extra),
    *(r for group in groups.values() for r in group if isinstance(r, str)),  # not {include-group = ...}
]
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
