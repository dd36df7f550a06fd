#!/usr/bin/env bash
# Runs the pFedMe authors' code on our partition (benchmarks/anchor/README.md says how to set it up).
#   benchmarks/anchor/run_pfedme.sh PFEDME_TREE RUNS_ROOT PYTHON DATASET ROUNDS TIMES [ALGORITHM...]
# PFEDME_TREE: their work tree (git archive of CharlieDinh/pFedMe), with our partition exported
# into its data/ by export_partition.py. Each algorithm runs in its own copy of their code under
# RUNS_ROOT/<dataset>-<rounds>/<algorithm>/ (their results/*.h5 names omit the round count), on
# the CPU (--gpu -1), one thread. Hyperparameters: their README's MLP ("dnn") commands.
set -euo pipefail
tree=$(realpath "$1"); root=$2; python=$3; dataset=$4; rounds=$5; times=$6; shift 6
algorithms=${*:-FedAvg PerAvg pFedMe}
case $dataset in
  mnist) name=Mnist; users=5; plr=0.09; lamda=15 ;;      # README: MNIST, non-convex
  synthetic) name=Synthetic; users=10; plr=0.01; lamda=20 ;;  # README: Synthetic, non-convex
  *) echo "unknown dataset $dataset (mnist | synthetic)" >&2; exit 2 ;;
esac
for algorithm in $algorithms; do
  case $algorithm in
    FedAvg) extra=() ;;
    PerAvg) extra=(--beta 0.001) ;;
    pFedMe) extra=(--personal_learning_rate "$plr" --beta 1 --lamda "$lamda" --K 5) ;;
    *) echo "unknown algorithm $algorithm" >&2; exit 2 ;;
  esac
  run="$root/$dataset-$rounds/$algorithm"
  rm -rf "$run"; mkdir -p "$run/results"
  cp -r "$tree/FLAlgorithms" "$tree/utils" "$tree/main.py" "$run/"
  ln -s "$tree/data" "$run/data"
  cmd=(main.py --dataset "$name" --model dnn --batch_size 20 --learning_rate 0.005
       --num_global_iters "$rounds" --local_epochs 20 --algorithm "$algorithm"
       --numusers "$users" --times "$times" --gpu -1 "${extra[@]}")
  echo "cd $run && $python ${cmd[*]}" > "$run/command.txt"
  start=$(date +%s)
  (cd "$run" && OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$python" "${cmd[@]}" > log.txt 2>&1)
  echo $(( $(date +%s) - start )) > "$run/wall_seconds.txt"
done
