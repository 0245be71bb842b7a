# Developer and CI entry points. CI runs `make test` and `make lint-infra` (through .ci/run).
CARGO ?= cargo

.PHONY: browser screenshots chaos fuzz demo test test-unit lint check-core fmt stack bench clean lint-infra sam-build

## test: lint, the browser tests' tools, then every test of the workspace against the local stack (moto + kube-sim)
test: lint browser
	tests/stack.sh run -- $(CARGO) test --workspace --all-targets --no-fail-fast

## test-unit: the tests that need no service: the core's, and the services' on the in-memory store and cluster
test-unit:
	$(CARGO) test -p podbridge-core -p podbridge

## lint: formatting, clippy (warnings denied), and the core's freedom from IO
lint: check-core
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## browser: what the console's browser tests need (tests/browser/setup.sh): Debian's chromium, playwright-core (npm ci)
browser:
	tests/browser/setup.sh

## screenshots: run the console's browser test and keep its screenshots in docs/console (the README shows them)
screenshots: browser
	CONSOLE_SCREENSHOTS=$(CURDIR)/docs/console tests/stack.sh run -- $(CARGO) test -p podbridge-cli --test dev console::

## check-core: the core does no IO: its dependencies are an allow-list, its code names no IO or clock (core/no-io.sh)
check-core:
	core/no-io.sh

## fmt: format the workspace
fmt:
	$(CARGO) fmt --all

## stack: start the local stack by hand, print its `export` lines, stop on Ctrl-C
stack:
	tests/stack.sh up

## demo: the whole product on this machine (no AWS account): the local stack runs the example jobs of examples/demo/
demo:
	examples/demo/demo.sh

## chaos: 2,000 jobs through the queue, dispatch, a failing cluster that loses nodes and slow DynamoDB answers, then a
## five-minute API outage; prints BENCH chaos_* lines, fails on any loss, double or impossible move
chaos:
	CHAOS_JOBS=2000 CHAOS_OUTAGE_SECONDS=300 tests/stack.sh run -- $(CARGO) test -p podbridge-tests --test e2e chaos:: -- --nocapture --test-threads 1

## fuzz: a bounded cargo-fuzz run (FUZZ_SECONDS, default 60) of message parsing, validation and the pod builder
FUZZ_SECONDS ?= 60
fuzz:
	test -x .tools/bin/cargo-fuzz || $(CARGO) install --locked --root .tools cargo-fuzz --version 0.13.1
	RUSTC_BOOTSTRAP=1 .tools/bin/cargo-fuzz run message --fuzz-dir fuzz -- -max_total_time=$(FUZZ_SECONDS)

## bench: the benchmarks (against the local stack), one `BENCH <name> <value> <unit>` line per figure
bench:
	tests/stack.sh run -- $(CARGO) bench --workspace --bench throughput --bench cold_start --bench dispatch_batch --bench reconcile_pass --bench state_latency --bench admission

## lint-infra: the deployment checks (template against the code, sam validate, cfn-lint, checkov,
## kubernetes-validate, actionlint, zizmor); installs its pinned tools into .venv-infra once
lint-infra:
	infra/tools/run.sh lint

## sam-build: `sam build` of every function (release, arm64, cargo-lambda) into .aws-sam/build;
## takes minutes and a few GB; SAM_BUILD_ARGS are passed on (e.g. --config-env prod)
sam-build:
	infra/tools/run.sh build $(SAM_BUILD_ARGS)

## clean: remove build output, the stack's logs and the Python venv
clean:
	$(CARGO) clean
	rm -rf .stack .venv
