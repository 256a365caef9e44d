# The README's two commands: `make demo` (the main job) and `make test` (the whole suite).
# Both install what is missing first (Debian packages, then .venv) via scripts/setup.sh.

.PHONY: demo test setup lint bench

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/fieldproof demo --out demo-out

test: setup
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/pytest -q

bench: setup
	.venv/bin/python bench/custody_bench.py
