# Entry points named in the README. The build itself is CMake + Ninja.
BUILD      ?= build
ASAN_BUILD ?= build-asan
CMAKE_FLAGS ?=
PREFIX     ?= /usr/local

.PHONY: all build build-asan run install prebuild wheel test test-c test-node test-binding test-python test-asan test-package bench bench-smoke soak soak-smoke fuzz fuzz-smoke clean

all: build

# Developer and CI builds treat warnings as errors (VX_WERROR); a user's plain cmake does not.
$(BUILD)/build.ninja: CMakeLists.txt tests/c/CMakeLists.txt
	cmake -S . -B $(BUILD) -G Ninja -DVX_WERROR=ON $(CMAKE_FLAGS)

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

$(ASAN_BUILD)/build.ninja: CMakeLists.txt tests/c/CMakeLists.txt
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DVX_WERROR=ON -DVX_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug

build-asan: $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)

# The library, header, server, vxevents.pc and the CMake package into PREFIX (/usr/local).
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# prebuilds/linux-x64/vxevents.glibc.node, the addon the npm package ships (npm pack runs it too).
prebuild: node_modules/.package-lock.json
	npm run --silent prebuild

# dist/vxevents-*-manylinux_*.whl: the self-contained Python wheel.
wheel:
	bash scripts/build-wheel.sh dist

# The main job: the standalone server on the embedded default, ws://localhost:3030/ws.
run: build
	./$(BUILD)/vxevents-server $(ARGS)

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

test-c: build
	cd $(BUILD) && ctest --output-on-failure --timeout 120

test-node: build node_modules/.package-lock.json
	VXEVENTS_SERVER=$(CURDIR)/$(BUILD)/vxevents-server npm run --silent test:node

# The Node binding: the addon is rebuilt from the current core (npm ci builds it only when
# the lockfile changes), then node --test against real Fastify apps and clients.
test-binding: build node_modules/.package-lock.json
	npm run --silent build:binding
	VXEVENTS_ADDON=$(CURDIR)/build-node/Release/vxevents.node \
	  VXEVENTS_SERVER=$(CURDIR)/$(BUILD)/vxevents-server npm run --silent test:binding

# What users install, used from outside the tree: the npm tarball (prebuilt addon) with npm and
# pnpm into fresh apps, its types (attw, tsc --strict over the README's and the seed's samples),
# the manylinux wheel in a fresh venv (auditwheel, ldd, examples/worker.py, mypy), and C
# programs built against a `make install` prefix with pkg-config and find_package.
test-package: build node_modules/.package-lock.json
	VXEVENTS_SERVER=$(CURDIR)/$(BUILD)/vxevents-server npm run --silent test:package

# The Python binding: pip install . into a venv under build/, then pytest (also drives
# build/vxevents-server and a real redis-server).
test-python: build
	VXEVENTS_SERVER=$(CURDIR)/$(BUILD)/vxevents-server bash tests/python/run.sh

# The C tests and the Node integration suite again, against an ASan+UBSan build
# (leaks, overflows and undefined behaviour fail the run).
test-asan: build-asan node_modules/.package-lock.json
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 ctest --output-on-failure --timeout 180
	VXEVENTS_SERVER=$(CURDIR)/$(ASAN_BUILD)/vxevents-server ASAN_OPTIONS=detect_leaks=1 \
	  npm run --silent test:node

# libFuzzer targets (clang): the JSON/UTF-8/member parsers, and raw peer bytes through a live
# core. fuzz-smoke runs each for 10 s; fuzz for 5 minutes each.
fuzz-smoke:
	bash fuzz/run.sh 10

fuzz:
	bash fuzz/run.sh 300

bench-smoke: build
	bash bench/smoke.sh

# Everything: what CI runs after installing the dependencies.
test: test-c test-node test-binding test-python test-package test-asan fuzz-smoke bench-smoke soak-smoke

bench: build
	bash bench/run.sh

# Connection churn with public, private and presence channels and client events; memory must
# settle and everything must be gone afterwards. soak-smoke: 20 s; soak: 10 minutes.
soak-smoke: build node_modules/.package-lock.json
	bash bench/soak.sh 20

soak: build node_modules/.package-lock.json
	bash bench/soak.sh 600

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) bench/build fuzz/build build-node prebuilds dist
