#!/usr/bin/env bash
# The GPU engine benchmark behind results/gpu/*.md; run from the repo root with OUT=<dir>.
# .devwheels/ (optional) holds diffusers/DeepCache wheels for a machine without them.
set -e
DEV=${DEV:-cuda}; Q=${Q:-}
if [ -d .devwheels ]; then python3 -m pip install -q --no-deps --no-index .devwheels/*.whl 2>&1 | tail -2; fi
export PYTHONPATH=$PWD MLFLOW_DISABLE_TELEMETRY=true
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"
python3 -m repro.cli bench --model sd15 --device $DEV --dtype float16 --batch 2 --steps ${SDSTEPS:-50} --scheduler DDIMScheduler --repeats ${R:-5} --deepcache 2:0 --deepcache 3:0 --deepcache 5:0 --deepcache 10:0 --deepcache 5:2 --calibrate --oracle --plain --out $OUT/sd15-fp16-b2.md > /dev/null
python3 -m repro.cli bench --model ddpm-cifar10 --device $DEV --batch ${DB:-128} --steps ${DSTEPS:-100} --repeats ${R:-5} --deepcache 2:2 --deepcache 3:2 --deepcache 5:2 --deepcache 10:2 --calibrate --oracle --plain --out $OUT/ddpm-cifar10-fp32-b128.md > /dev/null
ls -la $OUT
