# Sluice — two commands on a fresh Debian 12 machine: `make run` and `make test`.
BUILD_DIR ?= build
RELEASE_DIR ?= build-release
CONFIG    ?= config/sluice.yaml
BUILD_TYPE ?= RelWithDebInfo
JOBS      ?= $(shell nproc)

# Debian 12 packages Sluice builds and tests with (Boost 1.81, not the default 1.74).
DEB_PACKAGES := g++ cmake ninja-build ccache make pkg-config openssl curl \
  libboost1.81-dev libssl-dev rapidjson-dev libspdlog-dev libfmt-dev \
  prometheus-cpp-dev libyaml-cpp-dev libcli11-dev libhiredis-dev \
  libjemalloc-dev libgtest-dev libgmock-dev redis-server prometheus

# The fuzz targets (`make fuzz`): clang with libFuzzer and the sanitizer runtimes (bookworm ships compiler-rt
# as libclang-rt-14-dev), llvm-14 for symbolised reports, and the libraries the parsers link.
FUZZ_PACKAGES := clang libclang-rt-14-dev llvm-14 cmake ninja-build ccache libyaml-cpp-dev rapidjson-dev
FUZZ_SECONDS ?= 20

# The benchmark's reference and tools (`make bench`): nginx as the plain reverse proxy Sluice is measured
# against, wrk for cross-checks by hand, perf and valgrind for profiling (see docs/benchmarks.md).
BENCH_PACKAGES := nginx wrk linux-perf valgrind strace

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps fuzz-deps bench-deps build run test bench release test-release soak test-sanitize sanitize-one fuzz \
  clean

all: build

## deps: install the Debian packages (idempotent, silent when all are present)
## fuzz-deps: the same for the fuzzing toolchain; bench-deps: for the benchmark (nginx, wrk, perf, valgrind)
deps: PACKAGES = $(DEB_PACKAGES)
fuzz-deps: PACKAGES = $(FUZZ_PACKAGES)
bench-deps: PACKAGES = $(BENCH_PACKAGES)
deps fuzz-deps bench-deps:
	@missing=$$(for p in $(PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(BUILD_DIR)/build.ninja: CMakeLists.txt
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null

## build: compile the gateway and the tests
build: deps $(BUILD_DIR)/build.ninja
	@cmake --build $(BUILD_DIR) -j $(JOBS)

## run: start the gateway on the default (offline) config
run: build
	./$(BUILD_DIR)/sluice serve --config $(CONFIG)

## test: every unit and integration test
test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 300

## bench: Sluice next to nginx and the direct path (bench_proxy, issue 7's table), then the relay's own figures
## (bench_relay), measuring the release build the container ships (make release, below). BENCH_SECONDS sets the
## seconds per measure (default 5); BENCH_BINARY=build/sluice measures make build's binary instead.
BENCH_SECONDS ?= 5
BENCH_BINARY ?= $(RELEASE_DIR)/sluice
bench: build $(if $(filter $(RELEASE_DIR)/sluice,$(BENCH_BINARY)),release) bench-deps
	SLUICE_BINARY=$(abspath $(BENCH_BINARY)) ./$(BUILD_DIR)/bench_proxy --seconds $(BENCH_SECONDS)
	SLUICE_BINARY=$(abspath $(BENCH_BINARY)) ./$(BUILD_DIR)/bench_relay

## release: the gateway as the container image ships it, in build-release/: built instrumented, trained on the
## benchmark's load (its mock backend: non-stream, streams, slow streams, cache hits; under a minute), then
## rebuilt with that profile (profile-guided optimisation; docs/benchmarks.md, eighteenth round), both builds
## link-time optimised and compiled at -O3 (CMakeLists.txt; twentieth and twenty-first rounds)
release: deps
	@cmake -S . -B $(RELEASE_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLUICE_PGO=generate >/dev/null
	@cmake --build $(RELEASE_DIR) -j $(JOBS) --target sluice bench_proxy
	@find $(RELEASE_DIR) -name '*.gcda' -delete
	@echo "Training the instrumented gateway ($(RELEASE_DIR)/training.txt)"
	@./$(RELEASE_DIR)/bench_proxy --seconds 1 --rounds 1 --streams 500 --only sluice >$(RELEASE_DIR)/training.txt 2>&1 \
	  || { cat $(RELEASE_DIR)/training.txt; exit 1; }
	@test -n "$$(find $(RELEASE_DIR) -name '*.gcda' -print -quit)" || { echo "release: the training left no profile"; exit 1; }
	@rm -rf "$$(sed -n 's/^Logs and configs: //p' $(RELEASE_DIR)/training.txt)"
	@cmake -S . -B $(RELEASE_DIR) -DSLUICE_PGO=use >/dev/null
	@cmake --build $(RELEASE_DIR) -j $(JOBS) --target sluice

## test-release: every test again, the integration tests starting the release build's binary
test-release: build release
	cd $(BUILD_DIR) && SLUICE_BINARY=$(CURDIR)/$(RELEASE_DIR)/sluice ctest --output-on-failure -j $(JOBS) --timeout 300

## soak: the binary under mixed load for SOAK_SECONDS (default 180), then accounts, descriptors and memory checked
SOAK_SECONDS ?= 180
soak: build
	SOAK_SECONDS=$(SOAK_SECONDS) ./$(BUILD_DIR)/soak

## test-sanitize: every test again, under ASan+UBSan (build-asan) and then under TSan (build-tsan)
test-sanitize: deps
	@$(MAKE) --no-print-directory sanitize-one SAN=address SAN_DIR=build-asan
	@$(MAKE) --no-print-directory sanitize-one SAN=thread SAN_DIR=build-tsan

# Reports of every process (the tests and each sluice they start) go to files, so none is missed.
SAN_REPORTS = $(CURDIR)/$(SAN_DIR)/sanitizer-reports
sanitize-one:
	@cmake -S . -B $(SAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
	  -DSLUICE_SANITIZE=$(SAN) -DSLUICE_TEST_TIMEOUT=600 >/dev/null
	@cmake --build $(SAN_DIR) -j $(JOBS) --target sluice unit_tests integration_tests
	@rm -rf $(SAN_REPORTS) && mkdir -p -m 1777 $(SAN_REPORTS)
	@cd $(SAN_DIR) && \
	  ASAN_OPTIONS=log_path=$(SAN_REPORTS)/asan:detect_leaks=1:strict_string_checks=1 \
	  UBSAN_OPTIONS=log_path=$(SAN_REPORTS)/ubsan:print_stacktrace=1:halt_on_error=1 \
	  TSAN_OPTIONS=log_path=$(SAN_REPORTS)/tsan:halt_on_error=1:second_deadlock_stack=1 \
	  ctest --output-on-failure -j $(JOBS) --timeout 900; rc=$$?; \
	  if ls $(SAN_REPORTS)/* >/dev/null 2>&1; then cat $(SAN_REPORTS)/*; echo "$(SAN): sanitizer reports above"; exit 1; fi; \
	  exit $$rc
	@echo "$(SAN): every test passed with no sanitizer report"

## fuzz: build the libFuzzer targets (clang, ASan+UBSan) into build-fuzz/ and run each for FUZZ_SECONDS
fuzz: fuzz-deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh

clean:
	rm -rf $(BUILD_DIR) $(RELEASE_DIR) build-asan build-tsan build-fuzz
