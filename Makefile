# Every target that runs code depends on install (.venv), so `make test` on a fresh clone installs first.
# Offline, on a machine with torch but no package registry (a stock PyTorch GPU image): `make wheels` here writes
# the wheels that such an image lacks into .whl/, and there `make <target> PYTHON=python3 WHEELS=.whl` runs every
# target with PYTHON (which must hold torch), those wheels unpacked into .site/ and the repository on PYTHONPATH.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
WHEELS ?=
SITE := .site
ifeq ($(WHEELS),)
PY := $(VENV)/bin/python
RUFF := $(VENV)/bin/ruff
INSTALLED := $(VENV)/.installed
else
# absolute paths: the tests chdir to a temporary folder and start `python -m experiments.<name>` subprocesses
PY := PYTHONPATH=$(CURDIR)/$(SITE):$(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH)) $(PYTHON)
RUFF := $(PY) -m ruff
INSTALLED := $(SITE)/.installed
endif
# `make wheels`: what a stock PyTorch GPU image (torch, Lightning, torchmetrics, numpy, scipy, pandas, matplotlib,
# scikit-learn, onnx, onnxruntime, pytest, PyYAML, packaging, ...) lacks for `make test-gpu` (pytest imports every
# test module, gpu or not) and `make bench-gpu`, each at the version .venv holds, so the GPU run uses what the CPU
# tests here use. Not needed there, so left out: av (writes test videos; 34 MiB), wandb, submitit, ptflops, fvcore.
WHEELS_DIR ?= .whl
WHEEL_PACKAGES := hydra-core# tests/conftest.py and every entry point compose their configs with Hydra
WHEEL_PACKAGES += omegaconf# Hydra's configs (DictConfig, resolvers), imported across experiments/ and tests/
WHEEL_PACKAGES += antlr4-python3-runtime# omegaconf's interpolation parser (4.9.3 is an sdist only: pip builds it)
# binary ones, the x86-64 manylinux builds for the image's CPython 3.12
WHEEL_BINARIES := decord# datamodules.decoding reads videos with it; test_configs, test_stream and the datamodules
# tests import it through datamodules.kinetics (decord's one wheel is py3-none-manylinux2010_x86_64)
WHEEL_TARGET := --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --implementation cp \
  --python-version 3.12 --abi cp312
# name==version of each package as .venv holds it; make stops, naming the package, where .venv lacks one
pins = $(shell $(VENV)/bin/python -c 'import importlib.metadata as m, sys; \
  print(" ".join(f"{p}=={m.version(p)}" for p in sys.argv[1:]))' $(1))$(if $(filter-out 0,$(.SHELLSTATUS)),\
  $(error .venv lacks one of $(strip $(1)) (a project dependency): run `make install`, or drop it from the wheel list))
# torch is installed first and explicitly: a plain resolver would fetch a newer multi-GB CUDA build.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
ARGS ?=
# dataset of the cox3d targets: kinetics400 (datamodules/README.md) or moving_digits (generated here)
DATA ?= kinetics400
COX3D_kinetics400 := cox3d_s_kinetics400
COX3D_moving_digits := cox3d_tiny_moving_digits
# dataset of sweep-spa: the digits default unless DATA is given (cifar10, flowers102, catsdogs: Table 1's ResNet-50)
SPA_DATA = $(if $(filter command line environment,$(origin DATA)),$(DATA),digits)
SPA_EXPERIMENT_digits := spa_digits
SPA_EXPERIMENT_cifar10 := spa_resnet50_cifar10
SPA_EXPERIMENT_flowers102 := spa_resnet50_flowers102
SPA_EXPERIMENT_catsdogs := spa_resnet50_catsdogs
SPA_SEEDS ?= 1,2
# SPA_PARALLEL=1 runs one process per seed at once (the digits default: 1 torch thread each on 2 cores, ~2x faster);
# 0 runs the seeds one after the other in one sweep (the default for the real datasets, e.g. one GPU)
SPA_PARALLEL ?= $(if $(filter digits,$(SPA_DATA)),1,0)
comma := ,
SPA_SEED_GROUPS = $(if $(filter 1,$(SPA_PARALLEL)),$(subst $(comma), ,$(SPA_SEEDS)),$(SPA_SEEDS))
SPA_SWEEP := $(or $(LOG_DIR),.)/multirun/spa/$(SPA_DATA)/$(shell date +%Y-%m-%d_%H-%M-%S_%N)
# skeleton targets (train-cost-gcn, eval-cost-gcn): MODEL any of the 12 skeleton nets (configs/model/skeleton.yaml),
# DATA ntu60_xsub (their default) | ntu60_xview | ntu120_xsub | ntu120_xset | kinetics (datamodules/README.md) |
# synthetic (generated, 1/16 width), STREAM joint | bone | joint_bone | motion | bone_motion
MODEL ?= cost_gcn_mod
STREAM ?= joint
SKELETON_DATA = $(if $(filter command line environment,$(origin DATA)),$(DATA),ntu60_xsub)
SKELETON_ntu60_xsub := data=skeletons/ntu60 data.subset=xsub
SKELETON_ntu60_xview := data=skeletons/ntu60 data.subset=xview
SKELETON_ntu120_xsub := data=skeletons/ntu120 data.subset=xsub
SKELETON_ntu120_xset := data=skeletons/ntu120 data.subset=xset
SKELETON_kinetics := data=skeletons/kinetics
SKELETON_RUN = $(if $(filter synthetic,$(SKELETON_DATA)),experiment=$(if $(filter co%,$(MODEL)),cost_gcn_mod,st_gcn_mod)_synthetic_skeletons,experiment=skeletons/$(MODEL) $(or $(SKELETON_$(SKELETON_DATA)),$(error DATA=$(SKELETON_DATA) is none of ntu60_xsub ntu60_xview ntu120_xsub ntu120_xset kinetics synthetic))) model.variant=$(MODEL) data.stream=$(STREAM)
# online detection targets (train-cooadtr, eval-cooadtr, sweep-cooadtr): MODEL oadtr | oadtr_b1 | oadtr_b2 |
# cooadtr_b1 | cooadtr_b2 (default), DATA thumos14 (default) | tvseries | synthetic (generated features, demo scale:
# oadtr* and cooadtr* only), FEATURE anet (default) | kin | anet_audio | kin_audio (THUMOS14 only)
FEATURE ?= anet
OAD_MODEL = $(if $(filter command line environment,$(origin MODEL)),$(MODEL),cooadtr_b2)
OAD_DATA = $(if $(filter command line environment,$(origin DATA)),$(DATA),thumos14)
OAD_RUN = $(if $(filter synthetic,$(OAD_DATA)),experiment=transformers/$(if $(filter co%,$(OAD_MODEL)),cooadtr_b1,oadtr_b2)_synthetic_thumos model.variant=$(OAD_MODEL),experiment=transformers/$(OAD_MODEL)_$(or $(filter thumos14 tvseries,$(OAD_DATA)),$(error DATA=$(OAD_DATA) is none of thumos14 tvseries synthetic))_$(FEATURE))
# sweep-cooadtr: the grid of Table 6/7 (5 seeds x features x layers) as one Hydra multirun
SWEEP_MODELS ?= cooadtr_b1 cooadtr_b2
SWEEP_FEATURES ?= anet kin
SWEEP_SEEDS ?= 1,2,3,4,5
OAD_SWEEP := $(or $(LOG_DIR),.)/multirun/cooadtr/$(OAD_DATA)/$(shell date +%Y-%m-%d_%H-%M-%S_%N)
OAD_SWEEP_EXPERIMENTS = $(subst $(space),$(comma),$(foreach m,$(SWEEP_MODELS),$(foreach f,$(SWEEP_FEATURES),transformers/$(m)_$(OAD_DATA)_$(f))))
space := $(subst ,, )
# results set of sweep-spa, figures and profile-cox3d: any name is a git-ignored folder outputs/results/<name>/;
# `reference` is the committed paper/results (+ paper/figures), replaced only when named: RESULTS=reference
RESULTS ?= mine
RESULTS_DIR = $(if $(filter reference,$(RESULTS)),paper/results,outputs/results/$(RESULTS))
SPA_RUNS = $(RESULTS_DIR)/spa_runs_$(SPA_DATA).csv

.DEFAULT_GOAL := help
.PHONY: help install wheels test test-all test-gpu bench-gpu gpu-check lint format train-demo profile-demo data-moving-digits demo train-cox3d eval-cox3d profile-cox3d bench-cox3d figures sweep-spa train-cost-gcn eval-cost-gcn eval-streams demo-skeletons clean

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' \
	  '{t[NR] = $$1; d[NR] = $$2; if (length($$1) > w) w = length($$1)} \
	   END {for (i = 1; i <= NR; i++) printf "  %-" w "s  %s\n", t[i], d[i]}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet $(TORCH_SPEC)
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

# offline: the folder's wheels, as they are (no resolver, no index), into .site; again when a wheel comes or goes
CHECK_TORCH = @$(PYTHON) -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)" || { \
  echo "WHEELS=$(WHEELS) runs every target with PYTHON=$(PYTHON), which has no torch: name a Python that holds torch" \
    "(e.g. PYTHON=python3 on a PyTorch image), or leave WHEELS out to build .venv" >&2; exit 1; }
$(SITE)/.installed: $(wildcard $(WHEELS)/*.whl) $(wildcard $(WHEELS))
	$(CHECK_TORCH)
	@ls $(WHEELS)/*.whl > /dev/null 2>&1 || { echo "WHEELS=$(WHEELS) holds no wheels: run \`make wheels\` where" \
	  "the package registry is reachable and bring its .whl folder along" >&2; exit 1; }
	rm -rf $(SITE)
	$(PYTHON) -m pip install --quiet --no-index --no-deps --no-compile --target $(SITE) $(WHEELS)/*.whl
	touch $@

install: $(INSTALLED) ## create .venv and install the project with its dev extra (~4 min the first time); WHEELS=<dir> (offline): PYTHON's torch plus the wheels in <dir> unpacked into .site instead
	$(if $(WHEELS),$(CHECK_TORCH))

wheels: $(VENV)/.installed ## the wheels a stock PyTorch GPU image lacks (WHEEL_PACKAGES, WHEEL_BINARIES: Hydra, decord) at .venv's versions, for `make <target> PYTHON=python3 WHEELS=.whl` there, offline (needs the package registry here; ~10 s) -> .whl/*.whl (~13 MiB)
	mkdir -p $(WHEELS_DIR) && rm -f $(WHEELS_DIR)/*.whl
	$(VENV)/bin/python -m pip wheel --quiet --no-deps --wheel-dir $(WHEELS_DIR) $(call pins,$(WHEEL_PACKAGES))
	$(VENV)/bin/python -m pip download --quiet --no-deps --only-binary=:all: $(WHEEL_TARGET) --dest $(WHEELS_DIR) \
	  $(call pins,$(WHEEL_BINARIES))
	@du -b $(WHEELS_DIR)/*.whl | awk '{n += $$1; printf "%6.2f MiB  %s\n", $$1 / 2^20, $$2} \
	  END {printf "%6.2f MiB  in all, in $(WHEELS_DIR)/ (carry it to the GPU machine)\n", n / 2^20}'

test: install ## the fast suite: no network, GPU or dataset (~8 min on 2 cores)
	$(PY) -m pytest -m "not slow and not gpu and not data" -q $(ARGS)

test-all: install ## every CPU test, the slow ones included (~12 min)
	$(PY) -m pytest -m "not gpu and not data" -q $(ARGS)

test-gpu: install ## the CUDA tests (needs a GPU)
	$(PY) -m pytest -m gpu -q $(ARGS)

bench-gpu: install ## X3D-S/M (batch 1, 64) and X3D-L (batch 64) vs their CoX3D twins on CUDA: each eager, compiled and as CUDA graphs, TF32 and bf16, CoX3D-S with unrolled depthwise steps, where the GPU time goes (configs/bench_gpu.yaml) -> outputs/bench_gpu/<date>/<time>/{bench.json,profile.md}
	$(PY) -m experiments.bench --config-name=bench_gpu $(ARGS)

# gpu-check: one folder of at most 8 files, no subfolders (what a lent GPU machine's $OUT brings back)
ifndef GPU_OUT
GPU_OUT := $(or $(OUT),outputs/gpu_check/$(shell date +%Y-%m-%d_%H-%M-%S))
endif
GPU_TEST_ARGS ?=
GPU_BENCH_ARGS ?=
# GPU_TESTS=0: the bench alone (e.g. its second part, GPU_BENCH_ARGS="only_batch_sizes=[64]")
GPU_TESTS ?= 1
gpu-check: ## the GPU machine's one prepared run: make test-gpu (GPU_TESTS=0: skipped), then make bench-gpu, logs and results under GPU_OUT (default $$OUT where set, else outputs/gpu_check/<date>)
	@set -o pipefail; export PYTHONUNBUFFERED=1; out=$(abspath $(GPU_OUT)); mkdir -p $$out; tests=0; \
	if [ "$(GPU_TESTS)" != 0 ]; then \
	  $(MAKE) --no-print-directory test-gpu ARGS="$(strip --junitxml=$$out/test_gpu.xml $(GPU_TEST_ARGS))" 2>&1 \
	    | tee $$out/test_gpu.log; tests=$$?; \
	else echo "gpu-check: make test-gpu skipped (GPU_TESTS=0)"; fi; \
	$(MAKE) --no-print-directory bench-gpu \
	  ARGS="$(strip output_file=$$out/bench.json history_file=$$out/bench_history.csv $(GPU_BENCH_ARGS))" 2>&1 \
	  | tee $$out/bench.log; bench=$$?; \
	[ $$tests = 0 ] || echo "gpu-check: make test-gpu failed (exit $$tests): $$out/test_gpu.log" >&2; \
	[ $$bench = 0 ] || echo "gpu-check: make bench-gpu failed (exit $$bench): $$out/bench.log" >&2; \
	echo "gpu-check: logs and results in $$out/"; [ $$tests = 0 ] && [ $$bench = 0 ]

lint: install ## ruff check and format check
	$(RUFF) check .
	$(RUFF) format --check .

format: install ## apply ruff's fixes and formatting
	$(RUFF) check --fix .
	$(RUFF) format .

train-demo: install ## train the tiny conv_stack on synthetic clips (~20 s) -> outputs/train/<date>/<time>/metrics.json
	$(PY) -m experiments.train experiment=conv_stack_synthetic $(ARGS)

profile-demo: install ## profile co_conv_stack in clip and frame mode on CPU (~30 s) -> multirun/profile/<date>/<time>/{0,1}/profile.json
	$(PY) -m experiments.profile -m model=co_conv_stack mode=clip,frame device=cpu $(ARGS)

data-moving-digits: install ## generate the Moving Digits mp4s ahead of time under DATA_DIR (default ./data): 1800 lossless mp4s, 265 MB (~45 s)
	$(PY) -c "from datamodules.moving_digits import MovingDigitsDataModule as M; M(root='$${DATA_DIR:-data}').prepare_data()"

demo: install ## Moving Digits end to end on CPU: train X3D-tiny, evaluate it as CoX3D-tiny (clip + frame), profile both (~5 min) -> outputs/demo/<date>/<time>/{results.csv,acc_vs_flops.png}
	$(PY) -m experiments.demo $(ARGS)

# stream: the video it classifies; default an untrimmed Moving Digits stream under DATA_DIR, rendered on first use
STREAM_VIDEO = $(or $(VIDEO),$(or $(DATA_DIR),data)/moving_digits_stream.mp4)
.PHONY: stream
stream: install ## classify a video frame by frame, in real time, with the newest `make demo` run's CoX3D-tiny, compiled, CPU (VIDEO=<file.mp4|frames dir>; default: 6 generated Moving Digits actions in a row) (~1 min) -> outputs/stream/<date>/<time>/{predictions.csv,stream.json,predictions.png}
	$(PY) -m experiments.stream experiment=cox3d_tiny_moving_digits demo_checkpoint=true video=$(STREAM_VIDEO)$(if $(VIDEO),, generate=true) num_threads=1 $(ARGS)

train-cox3d: install ## train CoX3D-S on Kinetics-400 (DATA=moving_digits: CoX3D-tiny on Moving Digits); ARGS pass through -> outputs/train/...
	$(PY) -m experiments.train experiment=$(COX3D_$(DATA)) $(ARGS)

eval-cox3d: install ## evaluate CoX3D under the frame protocol: ARGS="ckpt_path=<ckpt>" or ARGS="model.net.weights=<x3d_s.pyth>" (eval=transient|extended too)
	$(PY) -m experiments.eval experiment=$(COX3D_$(DATA)) $(ARGS)

profile-cox3d: install ## params, GFLOPs, peak memory, throughput of every Kinetics table row on CPU, batch 1 (~3 min) -> outputs/results/<RESULTS, default mine>/kinetics400_profile.csv, never over an earlier one (RESULTS=reference: paper/results/)
	$(PY) -m experiments.profile_table --table kinetics400 --output $(RESULTS_DIR)/kinetics400_profile.csv$(if $(filter reference,$(RESULTS)), --replace) $(ARGS)

bench-cox3d: install ## X3D-S/M clips/s vs CoX3D-S/M frames/s at batch 1, 8, 32: eager, default (compiled), onnxruntime, CUDA graph; ARGS="profile=true" adds profile.md (~36 min CPU; ARGS="batch_sizes=[1,8]" ~10) -> outputs/bench/.../bench.json
	$(PY) -m experiments.bench $(ARGS)

.PHONY: check-data profile-skeletons bench-skeletons train-cooadtr eval-cooadtr sweep-cooadtr profile-transformers bench-transformers demo-transformers
profile-skeletons: install ## params, GFLOPs (MACs + ptflops), peak memory, throughput of the 12 Table II nets of Continual ST-GCNs on CPU, batch 1 (~12 min on 2 cores) -> outputs/results/<RESULTS, default mine>/ntu60_profile.csv, never over an earlier one (RESULTS=reference: paper/results/)
	$(PY) -m experiments.profile_table --table ntu60 --output $(RESULTS_DIR)/ntu60_profile.csv$(if $(filter reference,$(RESULTS)), --replace) $(ARGS)

bench-skeletons: install ## ST-GCN(*) clips/s vs CoST-GCN* and CoST-GCN predictions/s at batch 1 and their ratio, eager and compiled, CPU (+CUDA) (~4 min, ~8 the first time) -> outputs/bench_skeletons/<date>/<time>/bench.json
	$(PY) -m experiments.bench --config-name=bench_skeletons $(ARGS)

sweep-spa: install ## SPA grid: criterion x {fine-pruning, SPLoRA r8/r32, SPPaRA} x seeds (digits on CPU ~9 min; DATA=cifar10 ...) -> this sweep's runs only, outputs/results/<RESULTS, default mine>/spa_runs_<data>.csv (never over an earlier sweep; RESULTS=reference replaces paper/results/)
	@if [ "$(RESULTS)" != reference ] && [ -e $(SPA_RUNS) ]; then \
	  echo "$(SPA_RUNS) already holds a sweep's runs: name a new set (make sweep-spa RESULTS=<name>) or delete that file" >&2; \
	  exit 1; fi
	@mkdir -p $(SPA_SWEEP)
	@pids=""; for seed in $(SPA_SEED_GROUPS); do \
	  $(PY) -m experiments.spa -m experiment=$(SPA_EXPERIMENT_$(SPA_DATA)) pruning=weight,grad,taylor,lrp \
	    adapter=finetune,splora_r8,splora_r32,sppara seed=$$seed hydra.sweep.dir=$(SPA_SWEEP)/seeds_$$seed $(ARGS) & \
	  pids="$$pids $$!"; \
	done; status=0; for pid in $$pids; do wait $$pid || status=1; done; exit $$status
	$(PY) paper/spa.py --set $(RESULTS) collect $(SPA_SWEEP) --out $(SPA_RUNS)$(if $(filter reference,$(RESULTS)), --replace)

figures: install ## Kinetics, SPA, Continual ST-GCN and Continual Transformers tables, merged CSVs and PNGs -> outputs/results/<RESULTS, default mine>/, reading the committed inputs it lacks (RESULTS=reference replaces paper/results + paper/figures) (~10 s)
	$(PY) paper/kinetics400.py --set $(RESULTS)
	$(PY) paper/spa.py --set $(RESULTS)
	$(PY) paper/skeletons.py --set $(RESULTS)
	$(PY) paper/transformers.py --set $(RESULTS)

train-cost-gcn: install ## train a skeleton net with the paper's recipe: CoST-GCN* on NTU-60 X-Sub joints (MODEL=, DATA=, STREAM= above; DATA=synthetic: 6 epochs of ~100 s on a shared core) -> outputs/train/<date>/<time>/ (checkpoints, metrics.json)
	$(PY) -m experiments.train $(SKELETON_RUN) $(ARGS)

eval-cost-gcn: install ## test a skeleton checkpoint, clip protocol (eval=frame: step frame by frame): ARGS="ckpt_path=<ckpt>" or ARGS="model.net.weights=<official .pt/.ckpt>" -> outputs/eval/.../{metrics.json,test_logits.npy}
	$(PY) -m experiments.eval $(SKELETON_RUN) $(ARGS)

eval-streams: install ## fuse 2-4 eval runs (e.g. joint + bone): RUNS="<eval dir> <eval dir>", summed logits -> top-1/top-5 printed, OUT=<file.json> saves them (~2 s)
	$(PY) -m experiments.streams $(RUNS) $(if $(OUT),--out $(OUT))

demo-skeletons: install ## synthetic skeletons end to end on CPU: ST-GCN* (1/16 width) offline and as CoST-GCN* frame by frame, joint + bone + fused, profiled (~4 min on 2 cores, ~11 while other jobs share them) -> outputs/demo_skeletons/<date>/<time>/{results.csv,acc_vs_flops.png}
	$(PY) -m experiments.demo_skeletons $(ARGS)

train-cooadtr: install ## train an online detection net with the paper's recipe (4 epochs, 5 seeds via sweep-cooadtr): CoOadTR-b2 on THUMOS14 A.Net features (MODEL=, DATA=thumos14|tvseries|synthetic, FEATURE=anet|kin|anet_audio|kin_audio) -> outputs/train/<date>/<time>/ (checkpoints, metrics.json, protocol_results.csv)
	$(PY) -m experiments.train $(OAD_RUN) $(ARGS)

eval-cooadtr: install ## test an online detection net on the 64-step windows (ARGS="eval=stream": every step of whole videos): ARGS="ckpt_path=<ckpt>" or ARGS="model.net.weights=<CoOadTR/OadTR checkpoint.pth>" -> outputs/eval/.../{metrics.json,protocol_results.csv}
	$(PY) -m experiments.eval $(OAD_RUN) $(ARGS)

sweep-cooadtr: install ## Tables 6/7 grid as one Hydra multirun: SWEEP_MODELS (cooadtr_b1 cooadtr_b2) x SWEEP_FEATURES (anet kin) x SWEEP_SEEDS (1,2,3,4,5) on DATA (thumos14) -> multirun/cooadtr/<data>/<date>_<time>/<job>/, collected into outputs/results/<RESULTS>/oadtr_runs.csv (never over an earlier sweep's)
	@if [ "$(RESULTS)" != reference ] && [ -e $(RESULTS_DIR)/oadtr_runs.csv ]; then \
	  echo "$(RESULTS_DIR)/oadtr_runs.csv already holds a sweep's runs: name a new set (make sweep-cooadtr RESULTS=<name>) or delete that file" >&2; \
	  exit 1; fi
	$(PY) -m experiments.train -m experiment=$(OAD_SWEEP_EXPERIMENTS) seed=$(SWEEP_SEEDS) hydra.sweep.dir=$(OAD_SWEEP) $(ARGS)
	$(PY) paper/transformers.py --set $(RESULTS) collect $(OAD_SWEEP)/*/ --out $(RESULTS_DIR)/oadtr_runs.csv$(if $(filter reference,$(RESULTS)), --replace)

profile-transformers: install ## params, FLOPs per prediction (executed MACs + ptflops), peak memory, throughput of the 20 Table 6/7 nets on CPU, batch 1 (~1 min) -> outputs/results/<RESULTS, default mine>/oadtr_profile.csv, never over an earlier one (RESULTS=reference: paper/results/)
	$(PY) -m experiments.profile_table --table thumos14 --output $(RESULTS_DIR)/oadtr_profile.csv$(if $(filter reference,$(RESULTS)), --replace) $(ARGS)

bench-transformers: install ## OadTR-b1/b2 windows/s vs CoOadTR-b1/b2 steps/s at batch 1 and their ratio, eager and compiled, CPU (+CUDA) (~3 min) -> outputs/bench_transformers/<date>/<time>/bench.json
	$(PY) -m experiments.bench --config-name=bench_transformers $(ARGS)

demo-transformers: install ## generated THUMOS-layout features end to end on CPU: OadTR-b2, CoOadTR-b1/b2 and a 1-step CoOadTR-b1 trained (demo scale), tested on windows and whole streams, profiled (~3 min on 2 cores) -> outputs/demo_transformers/<date>/<time>/{results.csv,map_vs_flops.png}
	$(PY) -m experiments.demo_transformers $(ARGS)

check-data: install ## decode every sample of DATA (default kinetics400; charades, moving_digits, flowers102, ...) under DATA_DIR (default ./data) once, in parallel (WORKERS, default 8): <DATA_DIR>/<DATA>_check.csv of unreadable, short, missing, mislabelled and duplicate files, a summary per split; exit 1 if any but short (minutes per 10k videos)
	$(PY) -m datamodules.check --data $(DATA) --root $${DATA_DIR:-data} --workers $${WORKERS:-8}

clean: ## remove run outputs and caches (keeps .venv and the results sets in outputs/results)
	@if [ -d outputs ]; then find outputs -mindepth 1 -maxdepth 1 ! -name results -exec rm -rf {} +; fi
	rm -rf multirun logs .pytest_cache .ruff_cache
