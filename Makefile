# provd: the entry points users and CI run (see docs/development.md).
#
#   make run     install what is missing, build, start provd on a development setup
#   make test    install what is missing, build three ways, run every test suite
#
# Three Meson build directories, each configured once and then rebuilt
# incrementally:
#   build/       gcc, warnings are errors              (provd, CLIs, unit tests)
#   build-san/   clang, ASan + UBSan, no recovery      (unit and system tests)
#   build-fuzz/  clang, libFuzzer + ASan + UBSan       (fuzz targets only)

SHELL := /bin/bash

BUILD ?= build
BUILD_SAN ?= build-san
BUILD_FUZZ ?= build-fuzz
MESON ?= meson
NINJA ?= ninja
PYTHON ?= python3
# extra arguments for the test runner, e.g. make test TESTFLAGS='--filter sas'
TESTFLAGS ?=

SAN_FLAGS := -fno-sanitize-recover=all -fno-omit-frame-pointer
BUILD_OPTS := -Dwerror=true
SAN_OPTS := -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false \
	'-Dc_args=$(SAN_FLAGS)' '-Dc_link_args=$(SAN_FLAGS)'
# Meson 1.0's b_sanitize cannot say "fuzzer": the compile flag goes in c_args and
# the link flag only on the fuzz targets (meson option fuzz_link_args).
FUZZ_OPTS := -Dwerror=true -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
	'-Dc_args=-fsanitize=fuzzer-no-link $(SAN_FLAGS)' '-Dc_link_args=$(SAN_FLAGS)'

.PHONY: all deps build build-san build-fuzz run test clean

all: build

deps:
	@scripts/install-deps.sh

# $(call meson_dir,DIR,CC,OPTIONS): configure DIR once. A stamp in DIR records
# the compiler, the options and the list of test and fuzz sources (tests are
# picked up at configure time), so the directory is only reconfigured when one
# of them changed, and wiped only when the compiler did.
define meson_dir
	@sources=$$(cd tests/unit && ls test_*.c 2>/dev/null; cd ../../fuzz && ls fuzz_*.c 2>/dev/null); \
	want="CC=$(2) $(3) | $$(echo $$sources)"; \
	have=$$(cat $(1)/.provd-setup 2>/dev/null || true); \
	if [ ! -f $(1)/build.ninja ]; then \
		rm -rf $(1) && CC=$(2) $(MESON) setup $(3) $(1) >/dev/null || exit 1; \
	elif [ "$$have" != "$$want" ]; then \
		if grep -Eq '^ command = ($(2)$(if $(filter gcc,$(2)),|cc)) ' $(1)/build.ninja; then \
			CC=$(2) $(MESON) setup --reconfigure $(3) $(1) >/dev/null || exit 1; \
		else \
			CC=$(2) $(MESON) setup --wipe $(3) $(1) >/dev/null || exit 1; \
		fi; \
	fi; \
	printf '%s\n' "$$want" > $(1)/.provd-setup
endef

build: deps
	$(call meson_dir,$(BUILD),gcc,$(BUILD_OPTS))
	$(NINJA) -C $(BUILD)

build-san: deps
	$(call meson_dir,$(BUILD_SAN),clang,$(SAN_OPTS))
	$(NINJA) -C $(BUILD_SAN)

# Only the fuzz targets: the rest of this tree is never run.
build-fuzz: deps
	$(call meson_dir,$(BUILD_FUZZ),clang,$(FUZZ_OPTS))
	@$(NINJA) -C $(BUILD_FUZZ) build.ninja >/dev/null; \
	targets=$$($(NINJA) -C $(BUILD_FUZZ) -t targets all | \
		sed -n 's|^\(fuzz/fuzz_[A-Za-z0-9_]*\): .*|\1|p'); \
	echo "$(NINJA) -C $(BUILD_FUZZ)" $$targets; \
	$(NINJA) -C $(BUILD_FUZZ) $$targets

run: build
	@scripts/run.sh

# The Node SDK tests run with the node on PATH and, when that is not Node 18,
# again with Debian 12's Node 18 (scripts/node18.sh; what a fresh Debian 12 has).
test: deps build build-san build-fuzz
	$(PYTHON) tests/run_all.py --build-dir $(BUILD) --san-dir $(BUILD_SAN) \
		--fuzz-dir $(BUILD_FUZZ) --also-node "$$(scripts/node18.sh)" $(TESTFLAGS)

# make bench: provd against an nginx baseline with prov-bench (release build in
# build-bench/; BENCH_QUICK=1 for a short pass; see docs/benchmarks.md)
.PHONY: bench
bench: deps
	scripts/bench.sh

clean:
	rm -rf $(BUILD) $(BUILD_SAN) $(BUILD_FUZZ) build-node18 build-logs tests/system/.work
