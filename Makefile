# Portico — build, run, test. See README.md.
#   make            release build: build/portico
#   make run        install deps, build, start quickstart (demo upstreams included)
#   make test       install deps, build, run every test (unit, integration, ASan+UBSan, fuzz)
#   make asan       ASan+UBSan build in build/asan/
#   make unit       unit tests (ASan build)
#   make fuzz       libFuzzer drivers (clang) for a bounded time (FUZZ_SECONDS each)
#   make fuzz-long  black-box fuzzer against the ASan binary, FUZZ_LONG_SECONDS (default 1800), random seed

CC      ?= cc
BUILD   ?= build
OPT     ?= -O2 -g
SAN     ?=
WARN     = -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CFLAGS_ALL = -std=c17 -D_GNU_SOURCE -pthread $(WARN) $(OPT) $(SAN) -Isrc -I/usr/include/libxml2 -MMD -MP $(EXTRA_CFLAGS)
LIBS     = -lyaml -lpcre2-8 -lssl -lcrypto -lnghttp2 -lcares -lhiredis -lz -lbrotlienc -lbrotlidec -lzstd -ljansson -lxml2 -lcrypt -lm -pthread
FUZZ_SECONDS ?= 30
FUZZ_LONG_SECONDS ?= 1800
PYTHON  ?= /usr/bin/python3

LIB_SRC  := $(shell find src -name '*.c' ! -path 'src/cli/*' | sort)
CLI_SRC  := $(shell find src/cli -name '*.c' | sort)
UNIT_SRC := $(wildcard tests/unit/test_*.c)

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all run test deps asan unit unit-bins unit-run integration fuzz fuzz-long bench router-bench transform-bench splice-bench clean

all: $(BUILD)/portico

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

# The dashboard page is embedded with .incbin (src/admin/dashboard.c).
$(BUILD)/obj/src/admin/dashboard.o: src/admin/dashboard.html

$(BUILD)/libportico.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/portico: $(CLI_OBJ) $(BUILD)/libportico.a
	$(CC) $(CFLAGS_ALL) -o $@ $(CLI_OBJ) $(BUILD)/libportico.a $(LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libportico.a tests/unit/testlib.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itests/unit -o $@ $< $(BUILD)/libportico.a $(LIBS)

unit-bins: $(UNIT_BIN)

# Runs every unit test binary of $(BUILD); fails if any fails.
unit-run: $(UNIT_BIN)
	@rc=0; for t in $(UNIT_BIN); do $$t || rc=1; done; exit $$rc

deps:
	@scripts/install-deps.sh

asan:
	$(MAKE) BUILD=build/asan OPT="-O1 -g -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" build/asan/portico

unit:
	$(MAKE) BUILD=build/asan OPT="-O1 -g -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" unit-run

integration: asan all
	cd tests/integration && PORTICO_BIN=$(CURDIR)/build/asan/portico $(PYTHON) -m pytest -q -p no:cacheprovider .

fuzz:
	@tests/fuzz/run.sh $(FUZZ_SECONDS)

# Black-box fuzzing for a long time (docs/fuzzing.md). The seed is random
# and printed; FUZZ_SEED=N replays a run, FUZZ_LONG_SECONDS=S bounds it.
fuzz-long: asan
	@seed=$${FUZZ_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; \
	echo "fuzz-long: seed $$seed, $(FUZZ_LONG_SECONDS)s"; \
	$(PYTHON) tests/fuzz/blackbox/fuzz.py --seed $$seed --seconds $(FUZZ_LONG_SECONDS)

test: deps
	$(MAKE) all
	$(MAKE) asan
	@scripts/test-all.sh

run: deps all
	@examples/run-quickstart.sh $(BUILD)/portico

bench: all
	bench/compare

# Router lookup cost with 10 vs 10,000 routes (a micro-benchmark; never a test).
router-bench: $(BUILD)/libportico.a
	$(CC) $(CFLAGS_ALL) -o $(BUILD)/router_bench bench/router_bench.c $(BUILD)/libportico.a $(LIBS)
	$(BUILD)/router_bench

# MB/s of json_transform and JSON <-> XML on a 100 KB document (a micro-benchmark; never a test).
splice-bench:
	@mkdir -p $(BUILD)/bench
	$(CC) -std=c17 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -pthread -o $(BUILD)/bench/splice_vs_copy bench/splice_vs_copy.c
	$(BUILD)/bench/splice_vs_copy 256 3

transform-bench: $(BUILD)/libportico.a
	$(CC) $(CFLAGS_ALL) -o $(BUILD)/transform_bench bench/transform/transform_bench.c $(BUILD)/libportico.a $(LIBS)
	$(BUILD)/transform_bench

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)
