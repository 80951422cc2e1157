#!/usr/bin/env bash
# GPU checks in one go (the device image has its own jax/flax; ml_collections travels as a wheel in .whl/):
# cuDNN attention vs the XLA path on packed rows, the hand-written gradients, then the ~1B bf16 train-step benchmark.
set -u
export JAX_PLATFORMS=cuda XLA_FLAGS= PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" | tee "$OUT/env.txt"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$OUT/env.txt"
python3 -m pytest -q tests/test_attention.py tests/test_custom_gradients.py 2>&1 | tee "$OUT/attention.txt"
python3 bench/train_throughput.py --model-size=1b --seq-len=4096 --dtype=bfloat16 --skip-torch 2>"$OUT/train_1b.err" | tee "$OUT/train_1b.json"
python3 bench/train_throughput.py --model-size=1b --seq-len=4096 --dtype=bfloat16 --skip-torch --skip-dpo \
  --attention-impl=xla 2>"$OUT/train_1b_xla.err" | tee "$OUT/train_1b_xla.json"
