# modelgen — common tasks. `make run` starts the service with nothing configured
# (embedded SQLite under ./data, images in ./data/images, built-in Apimart
# simulator); `make test` runs every test (SQLite, PostgreSQL and MariaDB).

CARGO ?= cargo
PG_URL ?= postgres://postgres@127.0.0.1:5432/postgres
# The S3-compatible server the storage tests (and `make s3-server`) use.
S3S_FS_VERSION ?= 0.14.1
TOOLS ?= $(HOME)/.cache/modelgen-tools
S3S_FS ?= $(TOOLS)/bin/s3s-fs
MYSQL_URL ?= mysql://root@127.0.0.1:3306/test
# Coverage-guided fuzzing (`make fuzz-cov`).
CARGO_FUZZ_VERSION ?= 0.13.2
FUZZ_TARGETS ?= data_uri image_header apimart_response
FUZZ_SECONDS ?= 60
# Port of `make s3-server`, which `make run-s3` connects to.
S3_PORT ?= 8014

.PHONY: run run-release build test test-sqlite lint fmt clean-data chaos load burst bench bench-memory claim-bench s3-tools s3-server run-s3 fuzz fuzz-tools fuzz-cov api-check console-screenshots java-client test-java

## Debug build: compiles fastest and shares its artifacts with `make test`.
run:
	$(CARGO) run -p modelgen-api --bin modelgen -- serve

## Optimised build, for load tests and production-like runs.
run-release:
	$(CARGO) run --release -p modelgen-api --bin modelgen -- serve

build:
	$(CARGO) build --workspace --bins

## Every test. PostgreSQL must be reachable at $(PG_URL) (MODELGEN_TEST_PG_URL) and
## MariaDB/MySQL at $(MYSQL_URL) (MODELGEN_TEST_MYSQL_URL); MODELGEN_SKIP_PG=1 or
## MODELGEN_SKIP_MYSQL=1 leave one out on a machine without it.
test: build
	MODELGEN_TEST_PG_URL=$${MODELGEN_TEST_PG_URL:-$(PG_URL)} \
		MODELGEN_TEST_MYSQL_URL=$${MODELGEN_TEST_MYSQL_URL:-$(MYSQL_URL)} \
		$(CARGO) test --workspace --no-fail-fast

test-sqlite: build
	MODELGEN_SKIP_PG=1 MODELGEN_SKIP_MYSQL=1 $(CARGO) test --workspace --no-fail-fast

## A screenshot of each console page (sign-in, overview, tasks, task detail,
## callbacks, phone width) into docs/screenshots/, from a real headless Chromium
## (/usr/bin/chromium and /usr/bin/chromedriver, Debian's chromium and chromium-driver).
console-screenshots: build
	CONSOLE_SCREENSHOTS_DIR=docs/screenshots $(CARGO) test -p modelgen-e2e --test console screenshots_of_each_page -- --exact --nocapture

## The fuzz tests alone (fuzz/README.md), with many more cases than `make test`:
## FUZZ_CASES (20000) per property, FUZZ_HTTP_CASES (1000) over HTTP. SQLite only.
fuzz:
	MODELGEN_SKIP_PG=1 MODELGEN_SKIP_MYSQL=1 MODELGEN_FUZZ_CASES=$${FUZZ_CASES:-20000} \
		MODELGEN_FUZZ_HTTP_CASES=$${FUZZ_HTTP_CASES:-1000} \
		$(CARGO) test --workspace fuzz_ -- --test-threads=2

## Installs cargo-fuzz (crates.io) into $(TOOLS).
fuzz-tools:
	@[ -x $(TOOLS)/bin/cargo-fuzz ] || $(CARGO) install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked --root $(TOOLS)

## Coverage-guided fuzzing: libFuzzer through cargo-fuzz, on the stable toolchain (so
## without a sanitizer), FUZZ_SECONDS (60) per target of FUZZ_TARGETS, starting from the
## committed corpus. Inputs that reach new code go to $CARGO_TARGET_DIR/fuzz/corpus/<target>/
## (the committed corpus is left as it is); a crash stops with its input in
## fuzz/artifacts/<target>/ (fuzz/README.md says what to do with it).
fuzz-cov: fuzz-tools
	for t in $(FUZZ_TARGETS); do \
		work=$${CARGO_TARGET_DIR:-$(CURDIR)/target}/fuzz; mkdir -p $$work/corpus/$$t; \
		PATH="$(TOOLS)/bin:$$PATH" CARGO_TARGET_DIR=$$work \
			$(CARGO) fuzz run --sanitizer none $$t $$work/corpus/$$t fuzz/corpus/$$t \
			-- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

## schemathesis (PyPI, pinned in scripts/api-check) against /openapi.json of the debug
## binary on SQLite with the built-in simulator, on a loopback port: no 5xx, answers as
## documented, every JSON answer in the envelope. API_CHECK_EXAMPLES, API_CHECK_SEED.
api-check: build
	scripts/api-check

## Regenerates the Java client in clients/java/ from docs/openapi.json: OpenAPI Generator
## from PyPI (openapi-generator-cli, pinned in scripts/java-client), run with the local Java 17.
java-client:
	scripts/java-client generate

## The Java client against the real service (clients/java/README.md): checks that the
## committed client is what the generator makes of docs/openapi.json, compiles it and the
## example with javac against Debian's Jackson jars (/usr/share/java), starts the debug
## binary on SQLite with the built-in simulator on a loopback port, and runs the example:
## create, wait, edit, dress, and verify the signed callbacks it receives.
test-java: build
	scripts/java-client test

## Chaos run on PostgreSQL, then on MariaDB: CHAOS_TASKS (500) tasks over CHAOS_REPLICAS (3)
## replicas, a random replica killed -9 and restarted every 2-3 s; prints its figures.
## MODELGEN_SKIP_PG=1 or MODELGEN_SKIP_MYSQL=1 runs one database only.
chaos: build
	MODELGEN_TEST_PG_URL=$${MODELGEN_TEST_PG_URL:-$(PG_URL)} \
		MODELGEN_TEST_MYSQL_URL=$${MODELGEN_TEST_MYSQL_URL:-$(MYSQL_URL)} CHAOS_TASKS=$${CHAOS_TASKS:-500} \
		CHAOS_REPLICAS=$${CHAOS_REPLICAS:-3} $(CARGO) test -p modelgen-e2e --test chaos -- --nocapture --test-threads=1

## Load run (docs/benchmarks.md): the release binary on SQLite against the in-process
## simulator; prints a report. Extra flags via LOAD_ARGS, e.g.
## LOAD_ARGS="--database-url $(PG_URL) --out load.json".
load:
	$(CARGO) build --release -p modelgen-api --bin modelgen
	$(CARGO) run --release -p modelgen-e2e --bin load -- \
		--bin $${CARGO_TARGET_DIR:-target}/release/modelgen $(LOAD_ARGS)

## Burst runs (docs/benchmarks.md, "Bursts"), the release binary against the in-process
## simulator: `load --mode burst` on SQLite and on PostgreSQL ($(PG_URL); MODELGEN_SKIP_PG=1
## leaves it out) with UPSTREAM_MAX_RPS=200 and MAX_QUEUED_TASKS=10000 (user A posts
## BURST_REQUESTS (20000) creates at 16 connections, user B one every 2 s until A's backlog
## is gone; tasks of 3 s), then the two end-to-end runs with shipped defaults on SQLite:
## 1000 instant tasks created by 32 clients, and 1000 tasks of 60 s. The markdown report
## is printed and written to $(BURST_REPORT).
BURST_REQUESTS ?= 20000
BURST_REPORT ?= $${CARGO_TARGET_DIR:-target}/burst.md
burst:
	$(CARGO) build --release -p modelgen-api --bin modelgen -p modelgen-e2e --bin load
	set -e; bin=$${CARGO_TARGET_DIR:-target}/release; report=$(BURST_REPORT); : > $$report; \
	$$bin/load --bin $$bin/modelgen --mode burst --burst-requests $(BURST_REQUESTS) --task-duration 3 \
		--reads 3000 --label burst-sqlite | tee -a $$report; \
	if [ -z "$$MODELGEN_SKIP_PG" ]; then \
		$$bin/load --bin $$bin/modelgen --mode burst --burst-requests $(BURST_REQUESTS) --task-duration 3 \
			--reads 3000 --database-url $(PG_URL) --label burst-postgres | tee -a $$report; fi; \
	echo '### End to end, shipped defaults (SQLite)' | tee -a $$report; \
	$$bin/load --bin $$bin/modelgen --requests 1000 --concurrency 32 --task-duration 0 --reads 0 \
		--label e2e-instant | tee -a $$report; \
	$$bin/load --bin $$bin/modelgen --requests 1000 --concurrency 32 --task-duration 60 --reads 0 \
		--label e2e-60s | tee -a $$report; \
	echo "burst: report written to $$report"

## Side-by-side benchmark (issue 8; docs/benchmarks.md, "How `make bench` works"): builds
## the release binary (BENCH_BIN=path skips that), starts it with the built-in simulator on
## SQLite and on a fresh PostgreSQL database on $(PG_URL), seeds completed tasks, runs wrk
## (-t2, 16 and 64 connections) on /healthz, GET /tasks/{id}, the list and creates with a
## ~300 B and a ~50 KB body, and pgbench's insert and point select in the same run; writes
## absolute figures and ratios into docs/benchmarks.md and prints them. About 7 minutes;
## BENCH_SECONDS (10) per run, BENCH_QUICK=1 for a smoke run that leaves the doc alone,
## MODELGEN_SKIP_PG=1 for SQLite only. Installs wrk with apt-get if missing; needs pgbench.
bench:
	BENCH_PG_URL=$${BENCH_PG_URL:-$(PG_URL)} CARGO=$(CARGO) scripts/bench/run

## Memory benchmark (issue 8; docs/benchmarks.md, "Memory"): `load --mode memory`, the
## release binary against the in-process simulator on SQLite (MEMORY_DATABASE_URL=postgres://…
## for a fresh PostgreSQL database there instead). Part 1: MEMORY_TASKS (100000) creates at
## 16 connections, simulator tasks of an hour, TASK_TIMEOUT=7200, MAX_QUEUED_TASKS=0 and
## UPSTREAM_MAX_RPS=MEMORY_RPS (1000) so that all reach the upstream in minutes; then
## MEMORY_WINDOW (60) s with every task in flight: RSS, peak RSS, CPU and polls. Part 2: a
## fresh service per K in 1 and 4, K concurrent creates each with a ~10 MB PNG; peak RSS
## over the baseline and that over K × the image's bytes. About 12 minutes for 100 000;
## prints a markdown report and writes it to $(MEMORY_REPORT), the JSON beside it.
MEMORY_TASKS ?= 100000
MEMORY_RPS ?= 1000
MEMORY_WINDOW ?= 60
MEMORY_REPORT ?= $${CARGO_TARGET_DIR:-target}/memory.md
bench-memory:
	$(CARGO) build --release -p modelgen-api --bin modelgen -p modelgen-e2e --bin load
	set -e; bin=$${CARGO_TARGET_DIR:-target}/release; report=$(MEMORY_REPORT); \
	$$bin/load --bin $$bin/modelgen --mode memory --memory-tasks $(MEMORY_TASKS) \
		--memory-rps $(MEMORY_RPS) --memory-window $(MEMORY_WINDOW) \
		$${MEMORY_DATABASE_URL:+--database-url $$MEMORY_DATABASE_URL} \
		--out $${report%.md}.json > $$report; \
	cat $$report; echo "bench-memory: report written to $$report"

## Claim benchmark (docs/benchmarks.md, "Claims at 100 000 queued"): on SQLite, PostgreSQL
## and MariaDB, fills 100 000 queued tasks (most from one user) and 1 000 running upstream,
## prints the EXPLAIN of the queue's queries and times claims of 32 (median of 20) against
## an empty queue. Debug build (shares `make test`'s artifacts). MODELGEN_SKIP_PG=1 or
## MODELGEN_SKIP_MYSQL=1 leave one out.
claim-bench:
	MODELGEN_TEST_PG_URL=$${MODELGEN_TEST_PG_URL:-$(PG_URL)} \
		MODELGEN_TEST_MYSQL_URL=$${MODELGEN_TEST_MYSQL_URL:-$(MYSQL_URL)} \
		$(CARGO) test -p modelgen-persistence --test claim_bench -- --ignored --nocapture

## Installs s3s-fs (crates.io), the S3 server the storage tests start on loopback.
s3-tools:
	@[ -x $(S3S_FS) ] || $(CARGO) install s3s-fs --version $(S3S_FS_VERSION) --features binary --locked --root $(TOOLS)

## A local S3-compatible server for trying modelgen on S3: 127.0.0.1:$(S3_PORT) (8014),
## access key `modelgen`, secret `modelgen-secret`, bucket `modelgen`, data in ./data/s3.
s3-server: s3-tools
	mkdir -p data/s3/modelgen
	$(S3S_FS) --host 127.0.0.1 --port $(S3_PORT) --access-key modelgen --secret-key modelgen-secret data/s3

## modelgen against `make s3-server` (run that first, in another terminal),
## with presigned image URLs.
run-s3:
	STORAGE_URL=s3://modelgen/images AWS_ENDPOINT_URL=http://127.0.0.1:$(S3_PORT) AWS_ALLOW_HTTP=true \
	AWS_ACCESS_KEY_ID=modelgen AWS_SECRET_ACCESS_KEY=modelgen-secret AWS_REGION=us-east-1 \
	IMAGE_URL_MODE=presigned $(CARGO) run -p modelgen-api --bin modelgen -- serve

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-data:
	rm -rf data
