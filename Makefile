# The two commands of the README. Both prepare the environment first (scripts/setup.sh is
# idempotent: seconds when nothing changed).
#   make demo   set up, then run the main job (pointmap-demo) on the embedded default stream
#   make test   set up, then run the whole test suite; PYTEST_ARGS narrows it, e.g.
#               make test PYTEST_ARGS='test/foundation -x'
SHELL := /bin/bash
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: setup demo test clean

setup:
	@scripts/setup.sh

demo: setup
	@scripts/run_demo.sh $(DEMO_ARGS)

test: setup
	@scripts/run_tests.sh $(PYTEST_ARGS)

# Generated build output only; the virtual environment (.venv) is kept.
clean:
	rm -rf build install log
