# Every target bootstraps what it needs: a virtual environment with the project and its extras, then stubs.

unexport PYTHONDONTWRITEBYTECODE
# where the environment sets it (these machines do), no process keeps the bytecode it compiles: each of the suite's
# workers and processes (servers, replicas, the demo) would compile grpc, protobuf and the library again, and pytest
# would rewrite every test module in every worker: ~100 s of the suite's CPU (of 480 s, 2026-12-07)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed-dev
EXTRAS := status,otel,fleet
# the library's extras, and the contributors' dependency groups (pyproject.toml)
PROTOS := $(shell find protos -name '*.proto' 2>/dev/null)
GEN := protos/gen

.PHONY: test lint typecheck docs pytest compiled proto demo bench bench-quick bench-compare chaos soak clean matrix floors dist ops

test: proto
	@# the static checks and the docs run beside the suite, which waits more than it computes: at the lowest
	@# priority, so that they take only what the suite leaves (its real-time bounds stay as with nothing beside it)
	$(MAKE) --no-print-directory -j4 lint typecheck docs pytest BESIDE="nice -n 19"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# uv installs in seconds what pip takes half a minute for; it reads the same registries and dependency groups
	$(PY) -m pip install --quiet uv
	$(BIN)/uv pip install --python $(PY) --quiet -e '.[$(EXTRAS)]' --group dev
	touch $@

$(GEN)/.stamp: $(STAMP) $(PROTOS)
	rm -rf $(GEN) && mkdir -p $(GEN)
	@if [ -n "$(PROTOS)" ]; then \
		$(PY) -m grpc_tools.protoc -Iprotos --python_out=$(GEN) --grpc_python_out=$(GEN) \
			--pyi_out=$(GEN) $(PROTOS); fi
	@# make the stubs importable by .venv's python (services, tests, benchmarks)
	$(PY) -c "import site, pathlib; pathlib.Path(site.getsitepackages()[0], 'demo-stubs.pth').write_text('$(abspath $(GEN))\n')"
	touch $@

proto: $(GEN)/.stamp

BESIDE ?=
lint: proto
	$(BESIDE) $(BIN)/ruff check .
	$(BESIDE) $(BIN)/ruff format --check .
	$(BESIDE) $(BIN)/lint-imports --no-cache  # the layering contracts of pyproject.toml

typecheck: proto
	$(BESIDE) $(BIN)/mypy

docs: $(STAMP)
	@# the documentation site (mkdocs.yml), into site/: a warning fails it; nothing is fetched
	NO_MKDOCS_2_WARNING=1 $(BESIDE) $(BIN)/mkdocs build --strict --quiet --site-dir site

JS := tests/js/node_modules/.installed
$(JS): tests/js/package.json tests/js/package-lock.json
	@# the grpc-js peers of the suite (tests/js), from the npm registry, where node is (their tests say they skip where not)
	if command -v npm >/dev/null; then npm ci --prefix tests/js --no-audit --no-fund --silent && touch $@; fi

WORKERS ?= 10
# the suite waits more than it computes: from a fresh clone on 2 cores, 8 workers 4 min 0 s and 4 min 12 s (~158 % of
# the cores), 10 workers 3 min 51 s (172 %); two suites of 10 at once green (7 min 18 s each, 6 min 25 s with 8), the
# hedged load marking our sync hedged calls' open defect an expected failure where it shows (README Known issues);
# 12 each took longer than 8 (2026-12-07)
pytest: proto $(JS) compiled
	$(BIN)/pytest -n $(WORKERS) --dist load --maxschedchunk 1 --durations=20

compiled: proto
	@# one process first compiles what every worker imports (and rewrites the test modules' asserts), which on a
	@# fresh clone each of the workers would otherwise do at once (beside npm); errors show in the run that follows
	$(BIN)/pytest --collect-only -qq > /dev/null || true

PYTHONS := 3.10 3.11 3.12 3.13
# every Python from requires-python up to 3.13 (.ci/suites says so when one is absent)

MATRIX_WORKERS ?= 4
# fewer workers than make test: the client suite's real-time bounds, run five more times, meet less contention

matrix:
	@for version in $(PYTHONS); do WORKERS=$(MATRIX_WORKERS) .ci/suites py$$version $$version || exit 1; done

floors: $(STAMP)
	mkdir -p .matrix && $(PY) .ci/floors.py > .matrix/floors.txt
	WORKERS=$(MATRIX_WORKERS) .ci/suites floors $(firstword $(PYTHONS)) .matrix/floors.txt

dist: $(STAMP)
	@# what a release uploads: an sdist and a wheel, checked as PyPI would render and install them
	rm -rf dist && $(PY) -m build --outdir dist --quiet .
	$(BIN)/twine check --strict dist/*
	$(BIN)/check-wheel-contents dist/*.whl
	@# the public API's type completeness, as pyright sees the wheel installed (at least 98 %)
	$(PY) -m venv dist/typed && dist/typed/bin/pip install --quiet dist/*.whl
	cd dist/typed && VIRTUAL_ENV=$$PWD PATH=$$PWD/bin:$$PATH $(abspath $(BIN))/pyright --outputjson \
		--verifytypes interceptors --ignoreexternal > report.json || true
	$(PY) -c "import json; s = json.load(open('dist/typed/report.json'))['typeCompleteness']['completenessScore']; \
		print(f'type completeness: {s:.1%}'); raise SystemExit(s < 0.98)"

ops: proto
	@# promtool comes with Debian's prometheus package: installed here when absent (as root, from the registry)
	@command -v promtool >/dev/null || { echo "installing Debian's prometheus package (promtool)"; \
		export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
		|| { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; }
	@# the Prometheus rules and the Grafana dashboard (docs/operations/), promtool required this time
	REQUIRE_PROMTOOL=1 $(BIN)/pytest -p no:cacheprovider tests/ops

demo: proto
	$(PY) -m service_a.scenarios

bench: proto
	$(PY) -m bench.run

bench-quick: proto
	$(PY) -m bench.run --quick

BEFORE ?= HEAD
bench-compare: proto
	@# the healthy path of the library at the git revision BEFORE beside the working tree's, in turns (bench/compare.py)
	$(PY) -m bench.compare $(BEFORE)

chaos: proto
	$(PY) -m bench.chaos_run

soak: proto $(STAMP)
	$(PY) -m bench.soak --calls 1000000

clean:
	rm -rf $(VENV) $(GEN) .mypy_cache .ruff_cache .pytest_cache .matrix dist site tests/js/node_modules
