#!/usr/bin/env bash
# Run the recipe ablation arms one after the other on one thread (docs/training.md has the table):
#   bash benchmarks/training_ablation/run.sh [OUT_DIR] [DATA_DIR]
set -euo pipefail
here=$(dirname "$0")
out=${1:-runs/ablation}
data=${2:-../shared/data/ct}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
arm() {
  local name=$1; shift
  ctblend train --config "$here/base.yaml" --data "$data" --out "$out/$name" --quiet "$@"
}
arm scratch
arm augment augment.rotate_deg=10 augment.scale=0.1 augment.z_reverse=true
arm min_snr loss_weighting=min_snr
arm transfer --init-from ctblend/weights/slice2d_cpu128
arm min_snr_augment loss_weighting=min_snr augment.rotate_deg=10 augment.scale=0.1 augment.z_reverse=true
