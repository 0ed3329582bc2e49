# tsn — the two commands of the Quick start are `make demo` and `make test`.

CARGO ?= cargo

.PHONY: all build release demo test test-tls test-unit lint fmt bench redis-server chaos clean

all: build

build:
	$(CARGO) build --bins

release:
	$(CARGO) build --release --bins

## Starts the coordinator and three clusters (primary, secondary, sync
## service) in the foreground; Ctrl-C stops them all.
demo: release
	./target/release/tsn_demo

## The fault-tolerance test files, run a second time with TLS on every
## listener and channel (TSN_TEST_TLS=1: the harness makes a CA and a
## certificate per process).
FAULT_TESTS = binary(fault_tolerance) | binary(frozen_primary_refuses_writes) \
	| binary(classic_client_survives_failover) | binary(no_false_failover_under_saturation) \
	| binary(crashed_client_post_stored_once) | binary(coordinator_restart_keeps_clients_working) \
	| binary(sync_service_crash_loses_nothing) | binary(refused_without_secret) \
	| binary(refused_bad_internal_input) | binary(secret_rotation) | binary(mp3)

## Every test: unit tests and end-to-end tests that run the real binaries,
## then the fault-tolerance files again over TLS.
test: build
	$(CARGO) nextest run --workspace --no-fail-fast
	TSN_TEST_TLS=1 $(CARGO) nextest run -p tsn_harness --no-fail-fast -E '$(FAULT_TESTS)'

## The fault-tolerance files over TLS only.
test-tls: build
	TSN_TEST_TLS=1 $(CARGO) nextest run -p tsn_harness --no-fail-fast -E '$(FAULT_TESTS)'

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## The benchmark's Redis baseline needs redis-server (Debian's package).
redis-server:
	command -v redis-server >/dev/null 2>&1 || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; }

bench: release redis-server
	./target/release/tsn_bench

## A long randomised fault run (kill -9 and SIGSTOP of every kind of
## process) with the record-by-record check at the end. CHAOS_S sets its
## length in seconds; CHAOS_SEED replays a run's faults.
CHAOS_S ?= 600
chaos: release
	./target/release/tsn_chaos --duration-s $(CHAOS_S) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED),)

clean:
	$(CARGO) clean
	rm -rf run
