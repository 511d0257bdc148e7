#!/usr/bin/env bash
# The test command (README): installs fastrnn with its test dependencies (editable, so the
# compiled extension sits next to the sources), runs the whole suite under the best ISA, then the
# kernel/engine tests again under every other ISA this CPU has (FASTRNN_ISA).
# FASTRNN_WERROR=1 (set by .ci/run) makes C warnings errors.
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_NUM_THREADS=1   # NumPy's BLAS threads would compete with ours on 2 cores
export KERAS_BACKEND=torch      # the Keras tests run Keras 3 on torch: no TensorFlow needed
python -m pip install -q --disable-pip-version-check -e ".[test]"
# the integration tests' outside components (pytest -m integration), from Debian's packages:
# nginx (the serve scale-out test) and a headless browser for the web example's page
need=""
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need="$need nginx-light"
command -v chromium >/dev/null || need="$need chromium"
if [ -n "$need" ] && command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $need >/dev/null
fi
python -m pytest -q "$@"
best=$(python -c "import fastrnn; print(fastrnn.cpu_info()['isa'])")
for isa in $(python -c "import fastrnn; print(' '.join(fastrnn.cpu_info()['available']))"); do
    [ "$isa" = "$best" ] && continue
    echo "== kernel and engine tests under FASTRNN_ISA=$isa"
    FASTRNN_ISA=$isa python -m pytest -q tests/test_engine.py tests/test_kernels.py tests/test_stream.py tests/test_threads.py tests/test_pool.py \
        tests/test_properties.py tests/test_timepool.py tests/test_windows.py tests/test_precision.py
done
