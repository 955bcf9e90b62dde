#!/usr/bin/env bash
# One call on a lent GPU machine: the device benchmarks of issue 13, results tarred into $OUT.
#   throughput: VGG16 forward fp32 / bf16+channels_last / +torch.compile; decode-only limits
#               (CPU workers, GPU nvjpeg, both) and end to end (gpu_throughput.py)
#   collect:    actstats collect in steady state vs min(forward-only, decode-only), VGG16 bf16,
#               ImageNet-sized JPEGs, decode cpu (the DataLoader loop, compiled) / mixed / gpu
#   sample, demo: as before.
# The machine's python3 has torch/torchvision but not zarr/dask: carry wheels in .device/wheels
#   (pip download --only-binary=:all: --python-version 3.12 zarr dask distributed jsonschema
#    PyMaxflow -d .device/wheels) and pass WHEELS=.device/wheels.
# Smoke test on a CPU (tiny N, no wheels needed): SMOKE=1 bash benchmarks/device/run_gpu.sh
# Usage: bash benchmarks/device/run_gpu.sh [throughput] [collect] [sample] [demo]
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD MPLBACKEND=Agg
PY=${PYTHON:-python3}
parts=${*:-throughput collect sample demo}
want() { [[ " $parts " == *" $1 "* ]]; }
if [[ -n "${SMOKE:-}" ]]; then  # CPU check of the script itself: results go to $OUT only
  thr="--device cpu --images 24 --batch 8 --size 64 --repeats 1 --workers 1 --out $OUT"
  col="--device cpu --images 16 --size 64 --batch-size 4 --repeats 1 --out $OUT"
  labels=smoke
else
  thr="--images 4096 --batch 256 --repeats 10"
  col="--images 4096 --size 224 --batch-size 256 --bf16 --repeats 1"
  labels=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-')
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -m pip install -q --no-index --find-links "${WHEELS:-.device/wheels}" \
      zarr dask distributed jsonschema PyMaxflow 2>&1 | tail -2
fi
{
  $PY -c "import torch, torchvision, zarr, dask; print(torch.__version__, torchvision.__version__, zarr.__version__, dask.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
  before=$(ls benchmarks/results)
  if want throughput; then
    echo "== gpu_throughput"
    timeout 240 $PY benchmarks/gpu_throughput.py $thr --label "$labels"
  fi
  if want collect; then
    for decode in cpu mixed gpu; do
      [[ -n "${SMOKE:-}" && $decode != cpu ]] && continue
      echo "== collect vgg16 decode=$decode"
      timeout 150 $PY benchmarks/collect.py --model vgg16 --weights none $col --decode $decode \
          --label "vgg16-imagenet-jpeg-$labels-$decode"
    done
  fi
  if want sample && [[ -z "${SMOKE:-}" ]]; then
    echo "== sample"; timeout 120 $PY benchmarks/sample.py --device cuda --label "$labels-digits"
  fi
  if want demo && [[ -z "${SMOKE:-}" ]]; then
    echo "== demo --quick on CUDA (exercises collect/fit/sample device paths)"
    timeout 200 $PY -m actstats demo --quick --no-progress --out /tmp/demo-run \
        --cache /tmp/demo-cache && ls /tmp/demo-run && cp /tmp/demo-run/report.html "$OUT/"
  fi
  after=$(ls benchmarks/results)
  comm -13 <(echo "$before") <(echo "$after") > "$OUT/new-files.txt"
  (cd benchmarks/results && tar cf "$OUT/results.tar" $(cat "$OUT/new-files.txt") 2>/dev/null)
} 2>&1 | tee "$OUT/gpu-log.txt"
