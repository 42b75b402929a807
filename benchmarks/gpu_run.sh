#!/usr/bin/env bash
# The GPU checks of issue 13 (vectorized cohorts), for one CUDA machine with python3, torch, pytorch_lightning,
# scikit-learn, torchmetrics and pytest preinstalled and no package registry. Run it from anywhere in the repository:
#
#     OUT=/some/dir bash benchmarks/gpu_run.sh          # OUT defaults to ./gpu_results
#
# 1. the CUDA tests: the codec contract on CUDA, the benchmark's GPU smoke test (its columns do the same work on the
#    GPU) and every other test file that mentions CUDA, "-k 'cuda or gpu'" (time limit 100 s);
# 2. benchmarks/cohort_speed.py --accelerator gpu, K = 10, 50, 100, 200, 3 timed rounds after a warm-up, for the MLP
#    and the Caldas CNN in float32 (TF32 off) and bf16-mixed: four runs of at most 75 s (MLP) or 115 s (CNN) each,
#    K=200 last, the JSON rewritten after every row, so a run cut short keeps its finished rows.
#
# ACCELERATOR=cpu CLIENTS="10" ROUNDS=1 dry-runs the same steps on a machine without a GPU (CUDA tests skipped).
# At most ~8 minutes in all on an H200. Writes 6 files under $OUT: checks.txt (environment, tests, errors),
# cohort_gpu.md (the four tables) and cohort_{mlp,cnn}_{fp32,bf16}.json. Exits non-zero if any step failed.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_results}"
PY="${PYTHON:-python3}"
ACCELERATOR="${ACCELERATOR:-gpu}"
CLIENTS="${CLIENTS:-10 50 100 200}"
ROUNDS="${ROUNDS:-3}"
TEST_LIMIT=100  # seconds; with the four runs' limits, 8 minutes at most
declare -A LIMIT=([mlp]=75 [cnn]=115)
mkdir -p "$OUT"
export PYTHONPATH=. PYTHONUNBUFFERED=1
LOG="$OUT/checks.txt"
MD="$OUT/cohort_gpu.md"
: >"$LOG"
: >"$MD"
status=0
step() { echo "== $* ($(date -u +%H:%M:%S) UTC)" | tee -a "$LOG"; }

step environment
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
if ! $PY -c '
import sys, torch, pytorch_lightning, sklearn, torchmetrics, lightning_fl
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"pytorch_lightning {pytorch_lightning.__version__}, {torch.get_num_threads()} threads")
assert sys.argv[1] == "cpu" or torch.cuda.is_available(), "torch.cuda.is_available() is False"
print(torch.cuda.get_device_name() if sys.argv[1] == "gpu" else "CPU dry run")
' "$ACCELERATOR" 2>&1 | tee -a "$LOG"; then
    echo "gpu_run.sh: this machine cannot run the checks (see above)" | tee -a "$LOG"
    exit 2
fi

step "CUDA tests"
mapfile -t files < <({
    echo tests/codecs/test_codec_contract.py
    echo tests/test_cohort_speed_bench.py
    grep -rlE --include='test_*.py' 'cuda|accelerator="gpu"' tests
} | sort -u)
if $PY -c "import pytest" 2>/dev/null; then
    timeout -k 5 "$TEST_LIMIT" $PY -m pytest -o addopts="" -p no:cacheprovider -q -rfEs --continue-on-collection-errors \
        -m "not distributed" -k "cuda or gpu" "${files[@]}" 2>&1 | tee -a "$LOG" || status=1
else
    echo "pytest is not installed here: the CUDA tests were not run (carry its wheel to run them)" | tee -a "$LOG"
    status=1
fi

for precision in 32 bf16-mixed; do
    for model in mlp cnn; do
        tag="${model}_$([ "$precision" = 32 ] && echo fp32 || echo bf16)"
        step "cohort_speed $model $precision"
        printf '### %s, precision %s\n\n' "$model" "$precision" >>"$MD"
        if ! timeout -k 5 "${LIMIT[$model]}" $PY benchmarks/cohort_speed.py --accelerator "$ACCELERATOR" --models "$model" \
            --precision "$precision" --rounds "$ROUNDS" --clients-per-round $CLIENTS \
            --json "$OUT/cohort_$tag.json" 2>>"$LOG" | tee -a "$MD"; then
            status=1
            echo "(cut short or failed: the rows above are the finished ones; see checks.txt)" | tee -a "$MD"
        fi
        echo >>"$MD"
    done
done
rm -f "$OUT"/*.partial
step "done, status $status"
exit $status
