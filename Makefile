# The README's two commands: `make demo` (the main job) and `make test` (the whole suite).
# Both install what is missing first (Debian packages, then .venv) via scripts/setup.sh.

.PHONY: demo test setup lint bench

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/fieldproof demo --out demo-out

# The ingest and case tests again on PostgreSQL + SeaweedFS (docs/object-store.md, "What runs on S3").
S3_TESTS = $(addprefix tests/server/,test_ingest.py test_abuse.py test_handler.py test_batches.py \
	test_crash.py test_fuzz.py test_api.py test_cases.py test_retrieval.py test_export.py \
	test_verification.py test_retention.py test_matrix.py)

test: setup
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/pytest -q
	FIELDPROOF_TEST_STORE=s3 .venv/bin/pytest -q $(S3_TESTS) -k postgresql

bench: setup
	.venv/bin/python bench/custody_bench.py
