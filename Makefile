# modelgen — common tasks. `make run` starts the service with nothing configured
# (embedded SQLite under ./data, images in ./data/images, built-in Apimart
# simulator); `make test` runs every test (SQLite and PostgreSQL).

CARGO ?= cargo
PG_URL ?= postgres://postgres@127.0.0.1:5432/postgres

.PHONY: run run-release build test test-sqlite lint fmt clean-data chaos load

## Debug build: compiles fastest and shares its artifacts with `make test`.
run:
	$(CARGO) run -p modelgen-api --bin modelgen -- serve

## Optimised build, for load tests and production-like runs.
run-release:
	$(CARGO) run --release -p modelgen-api --bin modelgen -- serve

build:
	$(CARGO) build --workspace --bins

## Every test. PostgreSQL must be reachable at $(PG_URL) (MODELGEN_TEST_PG_URL);
## set MODELGEN_SKIP_PG=1 to run the SQLite half only on a machine without it.
test: build
	MODELGEN_TEST_PG_URL=$${MODELGEN_TEST_PG_URL:-$(PG_URL)} $(CARGO) test --workspace --no-fail-fast

test-sqlite: build
	MODELGEN_SKIP_PG=1 $(CARGO) test --workspace --no-fail-fast

## Chaos run on PostgreSQL: CHAOS_TASKS (500) tasks over CHAOS_REPLICAS (3) replicas,
## a random replica killed -9 and restarted every 2-3 s; prints its figures.
chaos: build
	MODELGEN_TEST_PG_URL=$${MODELGEN_TEST_PG_URL:-$(PG_URL)} CHAOS_TASKS=$${CHAOS_TASKS:-500} \
		CHAOS_REPLICAS=$${CHAOS_REPLICAS:-3} $(CARGO) test -p modelgen-e2e --test chaos -- --nocapture

## Load run (docs/benchmarks.md): the release binary on SQLite against the in-process
## simulator; prints a report. Extra flags via LOAD_ARGS, e.g.
## LOAD_ARGS="--database-url $(PG_URL) --out load.json".
load:
	$(CARGO) build --release -p modelgen-api --bin modelgen
	$(CARGO) run --release -p modelgen-e2e --bin load -- \
		--bin $${CARGO_TARGET_DIR:-target}/release/modelgen $(LOAD_ARGS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-data:
	rm -rf data
