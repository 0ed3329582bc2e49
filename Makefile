# tsn — the two commands of the Quick start are `make demo` and `make test`.

CARGO ?= cargo

.PHONY: all build release demo test test-unit lint fmt bench redis-server clean

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

## The benchmark's Redis baseline needs redis-server (Debian's package).
redis-server:
	command -v redis-server >/dev/null 2>&1 || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; }

bench: release redis-server
	./target/release/tsn_bench

clean:
	$(CARGO) clean
	rm -rf run
