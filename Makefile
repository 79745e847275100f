# `make test` is the README's test command: vet, formatting, and every test
# under the race detector. .ci/run sets DAXSNAP_STRICT=1 so that a test that
# would skip for a missing tool or privilege fails instead.
#
# `make build` makes ./daxsnap, a static binary (CGO_ENABLED=0), with the
# version `git describe` gives (VERSION=... to say otherwise; a plain
# `go build` reports the commit from the Go build info instead).
# `make install` (DESTDIR, PREFIX) installs it with the systemd unit, the
# man pages (generated from the commands) and shell completions.
# Go: the `go` line of go.mod (1.26.8) or newer.
GO ?= go
PREFIX ?= /usr/local
DESTDIR ?=
BIN ?= daxsnap
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)
BINDIR = $(PREFIX)/bin
MANDIR = $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/vendor-completions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
LDFLAGS = $(if $(VERSION),-X main.version=$(VERSION))

.PHONY: test vet fmt-check build install bench
# The timeout is per package: internal/daemon takes ~4 minutes on an idle
# 2-core machine and took 21 under a load of 15, close to the old 25.
test: vet fmt-check
	$(GO) test -race -count=1 -timeout 45m ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

build:
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=auto -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/daxsnap

# Installs what `make build` made (building it if there is none), so that
# `make build && sudo make install` needs no Go in root's PATH.
install:
	[ -x "$(BIN)" ] || $(MAKE) build
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/daxsnap
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	sed 's|^ExecStart=/usr/local/bin/daxsnap |ExecStart=$(BINDIR)/daxsnap |' contrib/systemd/daxsnap.service \
		>$(DESTDIR)$(UNITDIR)/daxsnap.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/daxsnap.service
	$(abspath $(BIN)) gen-man $(DESTDIR)$(MANDIR)/man8
	$(abspath $(BIN)) completion bash >$(DESTDIR)$(BASHCOMPDIR)/daxsnap
	$(abspath $(BIN)) completion zsh >$(DESTDIR)$(ZSHCOMPDIR)/_daxsnap
	$(abspath $(BIN)) completion fish >$(DESTDIR)$(FISHCOMPDIR)/daxsnap.fish

bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./internal/target/linear/
