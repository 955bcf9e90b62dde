#!/usr/bin/env bash
# Steady-state collect throughput on a GPU: 16,384 JPEGs, so start-up costs (store creation,
# graph, first-batch autotuning) amortize. Results tarred into $OUT. WHEELS as in run_gpu.sh.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; export PYTHONPATH=$PWD
{
  python3 -m pip install -q --no-index --find-links "${WHEELS:-.device/wheels}" \
      zarr dask distributed jsonschema PyMaxflow 2>&1 | tail -2
  before=$(ls benchmarks/results)
  for decode in gpu mixed; do
    echo "== collect bf16 decode=$decode, 16384 images"
    timeout 200 python3 benchmarks/collect.py --model vgg16 --weights none --images 16384 \
        --size 224 --imagenet-jpegs --batch-size 256 --bf16 --decode $decode --repeats 1 \
        --label "vgg16-jpeg-h200-bf16-$decode-16k"
  done
  after=$(ls benchmarks/results)
  comm -13 <(echo "$before") <(echo "$after") > "$OUT/new-files.txt"
  (cd benchmarks/results && tar cf "$OUT/results.tar" $(cat "$OUT/new-files.txt") 2>/dev/null)
} 2>&1 | tee "$OUT/gpu-log.txt"
