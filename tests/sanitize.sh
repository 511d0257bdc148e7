#!/usr/bin/env bash
# Run tests against a sanitizer build of the engine, built aside (the installed fastrnn is not
# touched): a copy of the package and the tests in $FASTRNN_SANITIZE_DIR (default: a temporary
# folder), its extension built with FASTRNN_SANITIZE; pytest runs in that copy, so the copy's
# fastrnn is the one imported (run from the checkout, `python -m pytest` would put the checkout's
# uninstrumented build first on sys.path, and TSan would report its unseen atomics as races).
#
#   bash tests/sanitize.sh asan [pytest args]   AddressSanitizer + UndefinedBehaviorSanitizer:
#                                               engine, stream, pool, loader, fuzz and precision
#                                               (the bf16 / int8 kernels) tests
#   bash tests/sanitize.sh tsan [pytest args]   ThreadSanitizer: tests/test_threads.py
#
# Python itself is not instrumented, so the sanitizer runtime is preloaded (LD_PRELOAD). Leak
# detection is off (CPython keeps objects alive at exit by design). A report fails the run:
# ASan and UBSan abort on the first error, TSan exits non-zero at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:?usage: tests/sanitize.sh asan|tsan [pytest args]}
shift
case "$kind" in
    asan) flags=address,undefined; runtime=libasan.so
          tests=(tests/test_engine.py tests/test_stream.py tests/test_pool.py tests/test_fileformat.py
                 tests/test_fuzz_loader.py tests/test_misuse.py tests/fuzz tests/test_precision.py) ;;
    tsan) flags=thread; runtime=libtsan.so
          tests=(tests/test_threads.py) ;;
    *) echo "tests/sanitize.sh: asan or tsan, got $kind" >&2; exit 2 ;;
esac
base=${FASTRNN_SANITIZE_DIR:-}
if [ -z "$base" ]; then                # a temporary build: removed when the run ends
    base=$(mktemp -d)
    trap 'rm -rf "$base"' EXIT
fi
dir=$base/$kind
rm -rf "$dir"
mkdir -p "$dir"
# the sources the build needs, and the Python package laid out as installed
cp -r setup.py pyproject.toml src_c tests bench examples "$dir"/
mkdir -p "$dir/fastrnn"
cp fastrnn/*.py fastrnn/*.pyx "$dir/fastrnn/"
cp -r converters "$dir/fastrnn/converters"
find "$dir" -name '__pycache__' -prune -exec rm -rf {} +
echo "== building fastrnn with -fsanitize=$flags in $dir"
(cd "$dir" && mkdir -p converters/frontends && FASTRNN_SANITIZE=$flags FASTRNN_WERROR=1 \
    python setup.py -q build_clib build_ext --inplace >build.log 2>&1) || { tail -40 "$dir/build.log"; exit 1; }
rm -rf "$dir/converters"
lib=$(gcc -print-file-name=$runtime)
[ -f "$lib" ] || { echo "tests/sanitize.sh: no $runtime for gcc ($lib)" >&2; exit 1; }
# libstdc++ loaded with the runtime, so that its C++ exception interceptor finds __cxa_throw
# (libtorch throws; without this, ASan aborts on the first exception thrown by a library that
# is loaded later)
cxx=$(gcc -print-file-name=libstdc++.so)
[ -f "$cxx" ] && lib="$lib $cxx"
export OPENBLAS_NUM_THREADS=1 KERAS_BACKEND=torch
export FASTRNN_SANITIZED=$kind         # tests that fork interpreters or time things may step aside
# reports go to files (pytest captures stderr, and children write theirs too), read below
log="$dir/report"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:handle_segv=0:log_path=$log"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$log"
export TSAN_OPTIONS="halt_on_error=0:exitcode=66:report_signal_unsafe=0:die_after_fork=0:log_path=$log:suppressions=$dir/tests/tsan.supp"
# the interpreter itself, not a wrapper script (pyenv's shim is bash, which the runtime must not enter)
py=$(python -c "import sys; print(sys.executable)")
cd "$dir"
PYTHONPATH="$dir" LD_PRELOAD="$lib" "$py" -c "import fastrnn, sys; sys.exit(not fastrnn._engine.__file__.startswith('$dir/'))" \
    || { echo "tests/sanitize.sh: the sanitized build is not the one imported" >&2; exit 1; }
echo "== ${tests[*]} under $kind"
rc=0
PYTHONPATH="$dir" LD_PRELOAD="$lib" "$py" -m pytest -q -p no:cacheprovider "${tests[@]}" "$@" || rc=$?
# a report is an error (ASan/UBSan/TSan); a file with warnings only (ASan's "failed to allocate"
# of an allocation bomb, which allocator_may_return_null turns into MemoryError) is shown, not failed
errors=0
for f in $(compgen -G "$log.*" || true); do
    cat "$f"
    grep -qE 'ERROR: |SUMMARY: |runtime error|CHECK failed|WARNING: ThreadSanitizer' "$f" && errors=$((errors + 1))
done
if [ $errors != 0 ]; then
    echo "== $kind: $errors report(s), above" >&2
    exit 1
fi
[ $rc = 0 ] && echo "== $kind: no reports"
exit $rc
