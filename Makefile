# `make test` is the README's test command: vet, formatting, and every test
# under the race detector. .ci/run sets DAXSNAP_STRICT=1 so that a test that
# would skip for a missing tool or privilege fails instead.
GO ?= go

.PHONY: test vet fmt-check build bench
test: vet fmt-check
	$(GO) test -race -count=1 -timeout 25m ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

build:
	$(GO) build ./...

bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./internal/target/linear/
