# oddsbus: `make run` starts the broker on its defaults, `make test` runs every check.
CARGO ?= cargo

.PHONY: run test fmt lint bench load build

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

# The load tool against a running broker, e.g. make load ARGS="--clients 1000 --batch 50"
load:
	$(CARGO) run --release --bin oddsbus-load -- $(ARGS)

build:
	$(CARGO) build --release
