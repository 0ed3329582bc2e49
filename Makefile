# tsn — the two commands of the Quick start are `make demo` and `make test`.

CARGO ?= cargo

.PHONY: all build release demo test test-unit lint fmt bench chaos clean

all: build

build:
	$(CARGO) build --bins

release:
	$(CARGO) build --release --bins

## Starts the coordinator and three clusters (primary, secondary, sync
## service) in the foreground; Ctrl-C stops them all.
demo: release
	./target/release/tsn_demo

## Every test: unit tests and end-to-end tests that run the real binaries.
test: build
	$(CARGO) nextest run --workspace --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench: release
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
