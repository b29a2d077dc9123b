# oddsbus: `make run` starts the broker on its defaults, `make test` runs every check.
CARGO ?= cargo
# Debian's Chromium, used by the browser test of the live odds board.
CHROMIUM ?= /usr/bin/chromium

.PHONY: run cluster test flaky fmt lint browser-test fuzz soak bench load build

# Flags go in ARGS, e.g. make run ARGS="--listen 0.0.0.0:8000 --scrape-interval 0"
run:
	$(CARGO) run --release --bin oddsbus -- $(ARGS)

# Three nodes on 8001-8003 sharing a redis-server of their own (see docs/OPERATIONS.md, "Scaling out").
cluster:
	ARGS="$(ARGS)" scripts/cluster.sh

# Formatting, lints, every Rust test, the board in a real browser, then a short fuzz run.
test: fmt lint
	$(CARGO) test --all-targets
	$(MAKE) browser-test
	$(MAKE) fuzz

# Every Rust test RUNS times (default 50), listing each test that failed even once; BUSY=1
# keeps every core busy meanwhile, e.g. make flaky RUNS=25 BUSY=1.
flaky:
	scripts/flaky.sh

# The whole workspace: the server, the load tool (`load/`) and the fuzz targets (`fuzz/`).
fmt:
	$(CARGO) fmt --all -- --check

# The release profile is checked too: `make run` builds it, and a type the compiler cannot
# prove `Unpin` failed there alone once.
lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) check --release --bin oddsbus

# The binary is built as the Rust tests build it: their dev-dependencies turn on more
# features of shared crates, so a plain `cargo build` would compile the crate a second time.
browser-test:
	$(CARGO) test --no-run --test binary
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
	$(CARGO) run --release -p oddsbus-load -- $(ARGS)

build:
	$(CARGO) build --release
