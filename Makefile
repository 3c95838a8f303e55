# Two commands on a fresh machine: `make demo` and `make test`. Both create the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel; override for GPUs, e.g. `make TORCH="torch==2.13.0 --index-url ..." demo`.
TORCH ?= torch==2.13.0
DEMO_MINUTES ?= 7
G2P_DEMO_MINUTES ?= 5
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
G2P := recipes/g2p_cmudict

.PHONY: setup test demo demo-g2p demo-shakespeare bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev,recipes,bench]"
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests recipes bench
	$(BIN)/ruff format --check src tests recipes bench

# The founding document's story on Shakespeare (recipes/shakespeare/demo.py): prepare -> pretrain -> fine-tune for
# genre (understanding) and next line (generation) -> evaluate beside the baselines, samples, commands to try.
# DEMO_MINUTES of training plus about a minute for the rest (7.7 minutes in all on 2 cores, data prepared).
demo: demo-shakespeare

demo-shakespeare: setup
	$(BIN)/python recipes/shakespeare/demo.py --minutes $(DEMO_MINUTES)

# Grapheme-to-phoneme on CMUdict: prepare the split, train the GRU (the faster learner on 2 cores) for
# G2P_DEMO_MINUTES, convert a few words, score the test set.

demo-g2p: setup
	$(BIN)/python $(G2P)/prepare.py --out $(G2P)/data
	rm -rf runs/demo-g2p
	$(BIN)/bigseq train --config $(G2P)/gru.yaml --train $(G2P)/data/train.jsonl \
	  --valid $(G2P)/data/valid.jsonl --out runs/demo-g2p --max-minutes $(G2P_DEMO_MINUTES) \
	  --set train.snapshot_minutes=[] --set train.eval_every=400 --set train.warmup_steps=200
	@echo "--- example conversions (beam 5) ---"
	@printf "hello\nworld\nsequence\nshakespeare\ntransformer\nbigseq\n" > runs/demo-g2p/examples.txt
	@$(BIN)/bigseq generate runs/demo-g2p --beam 5 < runs/demo-g2p/examples.txt | paste runs/demo-g2p/examples.txt -
	@echo "--- test set (10k words, greedy): WER and PER in percent ---"
	$(BIN)/bigseq evaluate runs/demo-g2p --data $(G2P)/data/test.jsonl
	@echo "try: echo hello | $(BIN)/bigseq generate runs/demo-g2p --beam 5"
	@echo "  or: $(BIN)/bigseq generate runs/demo-g2p   (type a word, get its phonemes; Ctrl-D ends)"

# Side-by-side speed and memory against Hugging Face transformers (a few minutes); writes bench/results.json.
bench: setup
	$(BIN)/python bench/bench.py --preset small --reps 7 --warmup 2

clean:
	rm -rf $(VENV) runs
