"""``python -m interceptors check CONFIG.json``, run as an operator runs it before a deploy: a good config prints
the chain each method gets and exits 0; a bad one exits 2 naming the JSON path of what is wrong."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from interceptors.__main__ import check as check_config
from interceptors.__main__ import main

README = Path(__file__).resolve().parents[2] / "README.md"

GOOD = {
    "methodConfig": [
        {
            "name": [{"service": "shop.Catalog"}],
            "timeout": "1.5s",
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
            },
            "resilience": {"circuitBreaker": {"failureThreshold": 7}},
        },
        {"name": [{"service": "shop.Catalog", "method": "Watch"}], "waitForReady": True},
        {"name": [{}], "resilience": {"globalRateLimiter": {"key": "shop", "maxCalls": 250}}},
    ],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
    "loadBalancingConfig": [{"round_robin": {}}],
}


def check(tmp_path: Path, config: Any) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "service-config.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    command = [sys.executable, "-m", "interceptors", "check", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_a_good_config_prints_the_chain_each_method_gets(tmp_path: Path) -> None:
    checked = check(tmp_path, GOOD)
    assert checked.returncode == 0, checked.stderr
    lines = checked.stdout.splitlines()
    assert lines[0].endswith("a good service config")
    catalog = next(line for line in lines if line.startswith("  /shop.Catalog/*: "))
    assert catalog.index("Timeout(seconds=1.5)") < catalog.index("RetryPolicy(") < catalog.index("CircuitBreaker(")
    assert "max_attempts=4" in catalog
    assert "on_codes(UNAVAILABLE, RESOURCE_EXHAUSTED)" in catalog
    assert "RetryBudget.token_bucket(max_tokens=10, token_ratio=0.1)" in catalog
    assert "failure_threshold=7" in catalog
    watch = next(line for line in lines if line.startswith("  /shop.Catalog/Watch: "))
    assert watch.endswith("no policies: calls pass untouched")
    assert "GlobalRateLimiter(" in next(line for line in lines if line.startswith("  every other method: "))
    left = next(line for line in lines if line.startswith("  left for grpc: "))
    assert json.loads(left.removeprefix("  left for grpc: "))["loadBalancingConfig"] == [{"round_robin": {}}]


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"methodConfig": [{"name": [{}], "retryPolicy": {"maxAttempts": "4"}}]}, "methodConfig[0].retryPolicy"),
        ({"methodConfig": [{"name": [{"method": "Get"}]}]}, "methodConfig[0].name[0]"),
        (
            {"methodConfig": [{"name": [{}], "resilience": {"circuitBreaker": {"failureThreshold": -1}}}]},
            "circuitBreaker",
        ),
        ({"retryThrottling": {"maxTokens": 10}}, "retryThrottling"),
        ('{"methodConfig": [', "JSON"),
        ("[]", "$"),
    ],
)
def test_a_bad_config_exits_2_naming_what_is_wrong(
    tmp_path: Path, config: Any, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command's ``main`` in this process (a process of its own: the tests around this one)."""
    path = tmp_path / "service-config.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    assert main(["check", str(path)]) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    assert "not a good service config" in printed.err
    assert named in printed.err


def test_the_readmes_example_prints_what_the_readme_shows(tmp_path: Path) -> None:
    """The README's config file, checked by the README's command: every line it shows, "..." for what it leaves out."""
    text = README.read_text()
    section = text[text.index("- **Checked before a deploy.**") :]
    config = re.search(r"```json\n(.*?)```", section, re.S)
    shown = re.search(r"```console\n(.*?)```", section, re.S)
    assert config is not None and shown is not None
    command, *lines = textwrap.dedent(shown.group(1)).splitlines()
    assert command == "$ python -m interceptors check service-config.json"
    (tmp_path / "service-config.json").write_text(textwrap.dedent(config.group(1)))
    _, *arguments = command.removeprefix("$ ").split()  # "python": the one running the tests
    checked = subprocess.run([sys.executable, *arguments], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    printed = checked.stdout.splitlines()
    assert len(printed) == len(lines)
    for line, wanted in zip(printed, lines, strict=True):
        assert re.fullmatch(".*".join(map(re.escape, wanted.split("..."))), line), (line, wanted)


def test_a_config_that_cannot_be_read_exits_2(tmp_path: Path) -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "interceptors", "check", str(tmp_path / "missing.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (checked.returncode, checked.stdout) == (2, "")
    assert "cannot be read" in checked.stderr


def test_a_global_rate_limiter_is_checked_without_a_store(tmp_path: Path) -> None:
    """Its block is built (its options checked) on a store that is closed: no pump starts, nothing is contacted."""
    path = tmp_path / "service-config.json"
    path.write_text(json.dumps({"methodConfig": [{"name": [{}], "resilience": {"globalRateLimiter": GOOD_LIMIT}}]}))
    before = {thread.ident for thread in threading.enumerate()}
    assert check_config(str(path)) == 0
    started = [thread.name for thread in threading.enumerate() if thread.ident not in before]
    assert not [name for name in started if name.startswith("fleet")], started
    path.write_text(json.dumps({"methodConfig": [{"name": [{}], "resilience": {"globalRateLimiter": {"key": 1}}}]}))
    assert check_config(str(path)) == 2


GOOD_LIMIT = {"key": "shop", "maxCalls": 250}
