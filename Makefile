# oddsbus: `make run` starts the broker on its defaults, `make test` runs every check.
CARGO ?= cargo

.PHONY: run test fmt lint bench build

run:
	$(CARGO) run --release --bin oddsbus

test: fmt lint
	$(CARGO) test --all-targets

fmt:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --all-targets -- -D warnings

bench:
	$(CARGO) bench

build:
	$(CARGO) build --release
