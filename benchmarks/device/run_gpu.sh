#!/usr/bin/env bash
# One call on a lent GPU machine: the device benchmarks, results tarred into $OUT.
# The machine's python3 has torch/torchvision but not zarr/dask: carry wheels in .device/wheels
#   (pip download --only-binary=:all: --python-version 3.12 zarr dask distributed jsonschema
#    PyMaxflow -d .device/wheels) and pass WHEELS=.device/wheels.
# Usage: bash benchmarks/device/run_gpu.sh [throughput] [collect] [sample] [demo]
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD MPLBACKEND=Agg
parts=${*:-throughput collect sample demo}
want() { [[ " $parts " == *" $1 "* ]]; }
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -m pip install -q --no-index --find-links "${WHEELS:-.device/wheels}" \
      zarr dask distributed jsonschema PyMaxflow 2>&1 | tail -2
  python3 -c "import torch, torchvision, zarr, dask; print(torch.__version__, torchvision.__version__, zarr.__version__, dask.__version__, torch.cuda.get_device_name())"
  before=$(ls benchmarks/results)
  if want throughput; then
    echo "== gpu_throughput"
    timeout 240 python3 benchmarks/gpu_throughput.py --images 4096 --batch 256 --repeats 10
  fi
  if want collect; then
    common="--model vgg16 --weights none --images 2048 --size 224 --imagenet-jpegs --batch-size 128"
    for run in "bf16 mixed --bf16" "fp32 mixed" "bf16 cpu --bf16" "bf16 gpu --bf16"; do
      set -- $run
      echo "== collect $1 decode=$2"
      timeout 150 python3 benchmarks/collect.py $common --decode "$2" ${3:-} \
          --label "vgg16-jpeg-h200-$1-$2"
    done
  fi
  if want sample; then
    echo "== sample"; timeout 120 python3 benchmarks/sample.py --device cuda --label h200-digits
  fi
  if want demo; then
    echo "== demo --quick on CUDA (exercises collect/fit/sample device paths)"
    timeout 200 python3 -m actstats demo --quick --no-progress --out /tmp/demo-run \
        --cache /tmp/demo-cache && ls /tmp/demo-run && cp /tmp/demo-run/report.html "$OUT/"
  fi
  after=$(ls benchmarks/results)
  comm -13 <(echo "$before") <(echo "$after") > "$OUT/new-files.txt"
  (cd benchmarks/results && tar cf "$OUT/results.tar" $(cat "$OUT/new-files.txt") 2>/dev/null)
} 2>&1 | tee "$OUT/gpu-log.txt"
