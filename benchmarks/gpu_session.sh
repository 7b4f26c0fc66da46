#!/usr/bin/env bash
# Every check that needs a GPU, as one script for a short lease on a lent machine (benchmarks/RESULTS.md):
#   1. versions, the card, what xformers can dispatch to;
#   2. the CUDA-only tests (xformers vs SDPA in bf16 among them);
#   3. benchmarks/vit_step.py: ours vs timm, xformers vs SDPA in bf16, MFU and peak memory of a full
#      DINO+MIM pretraining step at batch 64/GPU;
#   4. the demo's path end to end on the GPU: synthetic shards, tiny pretraining in bf16 with
#      attn_backend=auto (so xformers where it can run), fine-tuning on the validation split from
#      the teacher and from random init.
# The machine has no network: missing packages travel as wheels in .whl/ (installed into /tmp/site).
#   OUT=gpu_out bash benchmarks/gpu_session.sh
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
  # xformers' own kernels link libcudart.so.12; the image's torch is a CUDA 13 build.
  export LD_LIBRARY_PATH=/tmp/site/nvidia/cuda_runtime/lib:${LD_LIBRARY_PATH:-}
else
  export PYTHONPATH=$PWD
fi
PY=python3

echo "== 1. versions"
nvidia-smi -L
$PY -c "import torch, timm; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'timm', timm.__version__, torch.cuda.get_device_name())"
$PY -c "import xformers; print('xformers', xformers.__version__)" 2>&1 | tail -1
$PY -m xformers.info 2>&1 | grep -E "memory_efficient_attention\.(fa2|fa3|cutlass|flash)|is_functorch|build.torch_version|pytorch.version" | head -12

echo "== 2. CUDA tests"
timeout 120 $PY -m pytest -q -rs -p no:cacheprovider tests/personvit/models tests/personvit/losses 2>&1 | tail -6

echo "== 3. benchmarks/vit_step.py"
timeout 180 $PY benchmarks/vit_step.py --reps 10 2>&1 | tail -8
cp benchmarks/vit_step.json "$OUT/" 2>/dev/null

echo "== 4. demo path on the GPU"
D=${E2E_DIR:-/tmp/e2e}
rm -rf $D
$PY -m shard_tools.cli synth $D/synth --identities ${IDS:-200} --unlabeled ${UNLABELED:-3000} --val-identities ${VAL_IDS:-30} --workers "$(nproc)" 2>&1 | tail -1
$PY -m shard_tools.cli pack luperson $D/synth/unlabeled $D/lup --maxcount 500 --quiet
$PY -m shard_tools.cli pack market1501 $D/synth/val $D/val --maxcount 500 --quiet
# The demo's pretraining augmentations, read from the demo so the two cannot drift apart.
AUG=$($PY -c "from examples.demo.run import PRETRAIN_AUG; print(' '.join(PRETRAIN_AUG))") || exit 1
t0=$(date +%s)
timeout 240 $PY -m personvit pretrain configs/pretrain/tiny_cpu.yaml run.dir=$D/pre data.shards=$D/lup \
  train.epochs=${PRE_EPOCHS:-10} data.batch_size_per_rank=64 data.num_workers=6 data.pin_memory=true checkpoint.keep_every_epochs=0 \
  train.precision=bf16 model.attn_backend=auto monitor.shards=$D/val monitor.every_epochs=2 run.progress_every_s=30 $AUG \
  > "$OUT/pretrain.log" 2>&1
echo "pretrain rc $? in $(( $(date +%s) - t0 )) s"; tail -3 "$OUT/pretrain.log"
cp $D/pre/metrics.jsonl "$OUT/pretrain_metrics.jsonl" 2>/dev/null
for start in teacher random; do
  init=$([ $start = teacher ] && echo $D/pre || echo "")
  t0=$(date +%s)
  timeout 150 $PY -m personvit finetune configs/finetune/tiny_cpu.yaml run.dir=$D/ft-$start data.shards=$D/val \
    model.init=$init train.epochs=${FT_EPOCHS:-20} train.amp=bf16 data.num_workers=4 > "$OUT/ft-$start.log" 2>&1
  echo "finetune $start rc $? in $(( $(date +%s) - t0 )) s"; grep -h -i -E "mAP" "$OUT/ft-$start.log" | tail -2
done
