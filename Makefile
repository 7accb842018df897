# Entry points for building, testing and benchmarking; CI runs `make test` via .ci/run.

# Prefer the toolchain in /opt/swift when present so a bare shell finds it.
ifneq ($(wildcard /opt/swift/usr/bin),)
export PATH := /opt/swift/usr/bin:$(PATH)
endif

SWIFT ?= swift

.PHONY: deps build release test bench demo clean

deps:
	deploy/install-deps.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

# Allocation-freedom only holds with optimisations on, so those suites run again in release.
test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test
	$(SWIFT) test -c release --filter 'AllocationTests|AEADTests'

bench: release
	.build/release/eekv bench rpc --size 32 --seconds 4 --crypto none,inline,offload,adaptive --reference
	.build/release/eekv bench aes --size 64,1024,8192 --workers 1

# The main job: a local encrypted 3-node cluster, keys written and read through the CLI, then stopped.
demo: release
	deploy/demo.sh

clean:
	rm -rf .build
