#!/usr/bin/env bash
# One-factor variants of nanolily-v2's recipe (configs/v2-crop256-cpu.yaml, design 7), all trained at
# once on one GPU, each a process of its own (~0.24 s a step, validations included, with 14 sharing an H100 and 16 cores).
#
#   [PYTHON=python] bash scripts/design_search.sh DATA SECONDS OUT
#
# DATA holds lol-v1/our485 and splits/ (as ../shared/datasets); each training stops after SECONDS
# (its best weights and logs stay in OUT/<variant>/). Results of the 2026-11-26 run, stopped at
# ~2200 of 2600 steps: checkpoints/gpu-search-d7/ and docs/training.md ("Design search on a GPU").
set -u
DATA=$1 SECONDS_EACH=$2 OUT=$3
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
# each variant: its config overrides, separated by ";"
declare -A VARIANTS=(
  [A-d7-seed0]="" [B-d7-seed1]="seed=1"
  [C-crop192]="size=192;batch_size=32" [D-crop160]="size=160;batch_size=46" [E-crop128]="size=128;batch_size=72"
  [F-lr3e-3]="lr=3.0e-3" [G-lr1.2e-3]="lr=1.2e-3"
  [H-ssim0.5]="loss={l1: 1.0, ssim: 0.5, fft: 0.05}"
  [I-color0.5]="loss={l1: 1.0, ssim: 0.2, fft: 0.05, color: 0.5}"
  [J-exposure0.35-2.8]="exposure=[0.35, 2.8]" [K-ema0.999]="ema=0.999"
  [L-charbonnier]="loss={charbonnier: 1.0, ssim: 0.2, fft: 0.05}"
  [M-no-fft]="loss={l1: 1.0, ssim: 0.2}"
  [N-mixed0.25]="crop=mixed;resize_prob=0.25"
)
mkdir -p "$OUT"
for name in "${!VARIANTS[@]}"; do
  IFS=';' read -ra overrides <<< "${VARIANTS[$name]}"
  args=()
  for item in "${overrides[@]}"; do args+=(--set "$item"); done
  timeout "$SECONDS_EACH" "${PYTHON:-python3}" -m nanolily train --config configs/v2-crop256-cpu.yaml --data "$DATA" \
    --out "$OUT/$name" -q --set check_leakage=false "${args[@]}" > "$OUT/$name.log" 2>&1 &
done
wait
for name in $(printf '%s\n' "${!VARIANTS[@]}" | sort); do
  best=$(tail -n +2 "$OUT/$name/val_log.csv" 2>/dev/null | sort -t, -k3 -g | tail -1 | cut -d, -f1,3,4)
  echo "$name: best (step, val psnr, ssim) = $best"
done
