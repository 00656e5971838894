# Sluice — two commands on a fresh Debian 12 machine: `make run` and `make test`.
BUILD_DIR ?= build
CONFIG    ?= config/sluice.yaml
BUILD_TYPE ?= RelWithDebInfo
JOBS      ?= $(shell nproc)

# Debian 12 packages Sluice builds and tests with (Boost 1.81, not the default 1.74).
DEB_PACKAGES := g++ cmake ninja-build ccache make pkg-config openssl curl \
  libboost1.81-dev libssl-dev rapidjson-dev libspdlog-dev libfmt-dev \
  prometheus-cpp-dev libyaml-cpp-dev libcli11-dev libhiredis-dev \
  libgtest-dev libgmock-dev redis-server prometheus

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build run test bench clean

all: build

## deps: install the Debian packages (idempotent, silent when all are present)
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
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

## bench: the benchmark programs (print tables)
bench: build
	@for b in $(BUILD_DIR)/bench_*; do [ -x "$$b" ] && "$$b"; done

clean:
	rm -rf $(BUILD_DIR)
