# Sourced by the scripts/gpu_*.sh device scripts (not run on its own): unpacks the carried wheel
# kit (.gpu_carry/kit_small.tar.xz, built by scripts/prepare_gpu_carry.sh: mlflow, datasets,
# lm-eval, pytrec_eval, bm25s, ...) into /tmp/site and sets the environment: the repository and
# the kit on PYTHONPATH, an MLflow store under $OUT, the hub offline, JAX on the CPU (importing
# bm25s would otherwise take the GPU's memory), unbuffered output.
if [ ! -e /tmp/site/.m2kit ]; then  # once per machine (scripts may source this twice)
mkdir -p /tmp/m2kit
python3 -c "import tarfile; tarfile.open('.gpu_carry/kit_small.tar.xz').extractall('/tmp/m2kit', filter='data')"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site /tmp/m2kit/*.whl && touch /tmp/site/.m2kit
fi
export PYTHONPATH=/tmp/site:$PWD MLFLOW_TRACKING_URI=sqlite:///$OUT/mlflow.db \
  HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 JAX_PLATFORMS=cpu PYTHONUNBUFFERED=1
