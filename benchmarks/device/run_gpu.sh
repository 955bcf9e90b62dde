#!/usr/bin/env bash
# One call on a lent GPU machine: every device benchmark, results tarred into $OUT.
# The machine's python3 has torch/torchvision but not zarr/dask: carry wheels in .device/wheels
#   (pip download --python-version 3.12 ... -d .device/wheels; see benchmarks/README.md).
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD MPLBACKEND=Agg
log="$OUT/gpu-log.txt"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -m pip install -q --no-index --find-links "${WHEELS:-.device/wheels}" \
      zarr dask distributed jsonschema PyMaxflow 2>&1 | tail -2
  python3 -c "import torch, torchvision, zarr, dask; print(torch.__version__, torchvision.__version__, zarr.__version__, dask.__version__, torch.cuda.get_device_name())"
  before=$(ls benchmarks/results)
  echo "== gpu_throughput"; timeout 240 python3 benchmarks/gpu_throughput.py --images 4096 --batch 256 --repeats 10
  echo "== collect fp32";  timeout 120 python3 benchmarks/collect.py --model vgg16 --weights none --images 2048 --size 224 --jpeg --device cuda --batch-size 128 --label h-gpu-fp32
  echo "== collect bf16";  timeout 120 python3 benchmarks/collect.py --model vgg16 --weights none --images 2048 --size 224 --jpeg --device cuda --batch-size 128 --bf16 --label h-gpu-bf16
  if [ -f benchmarks/sample.py ]; then
    echo "== sample"; timeout 120 python3 benchmarks/sample.py --device cuda --label h-gpu
  fi
  after=$(ls benchmarks/results)
  comm -13 <(echo "$before") <(echo "$after") > "$OUT/new-files.txt"
  (cd benchmarks/results && tar cf "$OUT/results.tar" $(cat "$OUT/new-files.txt"))
} 2>&1 | tee "$log"
