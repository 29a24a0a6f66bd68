.PHONY: demo test install bench

install:
	bash scripts/install-deps.sh

# The main job on a fresh machine: install, make the offline base image, build and run the seed app.
demo: install
	bash examples/getstarted/demo.sh

# The whole test suite (CI runs exactly this through .ci/run); install adds the tests' packages.
test: export SHOAL_TEST_DEPS := 1
test: install
	.venv/bin/python -m pytest -q -rs -p no:cacheprovider --durations=25 tests

bench: install
	.venv/bin/python bench/run_all.py
