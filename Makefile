# tfsmount: make demo runs the example, make test runs every test.
# Both work on a fresh Debian machine as root (make setup installs what they need).

GO      ?= go
BIN     := bin/tfsmount
# Packages whose concurrency the race detector must see (tfsdebug: page
# buffers come from Go memory so the detector can check them).
RACE_PKGS := ./bh/... ./irq/... ./heap/... ./blockdev/... ./pagecache/... ./tfs/...
# The filesystem's unit tests run in the debug build too: lock-order checks,
# page buffers the race detector can see, completion-once checks.
DEBUG_PKGS := ./tfs/...

.PHONY: all build setup demo test unit race e2e vet layers bench crashsim clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/tfsmount

# Debian packages the tests and the demo use: FUSE's mount helper, fio for
# benchmarks and fio-driven tests, xfs_io and attr tools for e2e checks,
# rsync and useradd for the copy and permission tests, and three NBD
# servers (nbdkit, qemu-nbd with qemu-img, nbd-server) for the NBD backend.
setup:
	@missing=""; \
	for c in fusermount3:fuse3 fio:fio xfs_io:xfsprogs getfattr:attr rsync:rsync useradd:passwd \
		nbdkit:nbdkit qemu-nbd:qemu-utils nbd-server:nbd-server chattr:e2fsprogs; do \
		command -v $${c%%:*} >/dev/null 2>&1 || missing="$$missing $${c#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

demo: setup build
	bash scripts/demo.sh

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Every import inside the module points down the layers (scripts/layers.sh).
layers:
	bash scripts/layers.sh

unit:
	$(GO) test -count=1 -timeout 20m $$($(GO) list ./... | grep -v -e 'tfsmount/tests$$' -e 'tfsmount/tfs$$' -e 'tfsmount/tfs/')
	$(GO) test -count=1 -tags tfsdebug -timeout 20m $(DEBUG_PKGS)

race:
	$(GO) test -count=1 -race -tags tfsdebug -timeout 20m $(RACE_PKGS)

e2e: build
	TFSMOUNT_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 30m ./tests/...

test: setup vet layers unit race e2e

bench: setup build
	bash scripts/bench.sh

# The long crash simulation: 5 seeds, 5000 crash states (scripts/crashsim.sh).
crashsim:
	bash scripts/crashsim.sh

clean:
	rm -rf bin
