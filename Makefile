# oddsbus: `make run` starts the broker on its defaults, `make test` runs every check.
CARGO ?= cargo
# Debian's Chromium, used by the browser test of the live odds board.
CHROMIUM ?= /usr/bin/chromium

.PHONY: run test fmt lint browser-test fuzz soak bench load build

run:
	$(CARGO) run --release --bin oddsbus

# Formatting, lints, every Rust test, the board in a real browser, then a short fuzz run.
test: fmt lint
	$(CARGO) test --all-targets
	$(MAKE) browser-test
	$(MAKE) fuzz

# Each includes the fuzz targets, a separate workspace (`fuzz/`), which shares `target/`.
fmt:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check

lint:
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --manifest-path fuzz/Cargo.toml --target-dir target -- -D warnings

browser-test:
	$(CARGO) build --bin oddsbus
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  echo "The browser test needs Chromium at $(CHROMIUM)."; \
	  echo "Install it with 'apt-get install chromium' (Debian), or run with CHROMIUM=/path/to/chromium."; \
	  exit 1; \
	fi
	@command -v npm >/dev/null || { echo "The browser test needs Node.js and npm: 'apt-get install nodejs npm'."; exit 1; }
	cd tests/browser && npm ci --no-audit --no-fund --silent && CHROMIUM=$(CHROMIUM) npm test

# Each cargo-fuzz target for FUZZ_SECS (30 s in `make test`); longer runs: make fuzz FUZZ_SECS=600
FUZZ_SECS ?= 30
fuzz:
	FUZZ_SECS=$(FUZZ_SECS) scripts/fuzz.sh

# Connection churn plus continuous updates for SOAK_SECS (default 5 minutes); see RELIABILITY.md.
SOAK_SECS ?= 300
soak:
	ODDSBUS_SOAK_SECS=$(SOAK_SECS) $(CARGO) test --release --test soak -- --nocapture

bench:
	$(CARGO) bench

# The load tool against a running broker, e.g. make load ARGS="--clients 1000 --batch 50"
load:
	$(CARGO) run --release --bin oddsbus-load -- $(ARGS)

build:
	$(CARGO) build --release
