#!/usr/bin/env bash
# Install everything the tests need, then run every test: Python (pytest) and C++ (ctest),
# and build the C++ example against the installed library. .ci/run calls this script.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Headless Chromium for the report tests (Debian package; Playwright drives it through
# executable_path, so it downloads no browser of its own).
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
export CNNVIZ_REQUIRE_CHROMIUM=1
# Screenshots of each report section from the browser tests land here.
export CNNVIZ_TEST_ARTIFACTS=${CNNVIZ_TEST_ARTIFACTS:-build/test-artifacts}

# The CPU wheel of torch first, so the extra's range does not pull a CUDA build.
"$PY" -m pip install -q "torch==2.13.0"
"$PY" -m pip install -q -e ".[torch,test,segmentation,distributed,lint,browser]"

# Lint, format and types: both packages, tests and benchmarks (zero findings, no blanket ignores).
"$PY" -m ruff check .
"$PY" -m ruff format --check .
"$PY" -m mypy cnnviz cnnviz_core

# Python tests, from the installed (editable) package with its built extension.
"$PY" -m pytest -p no:cacheprovider tests

# C++ tests, then install the library and build the example app against it.
cmake -S . -B build/cpp -DCNNVIZ_BUILD_TESTS=ON -DCMAKE_BUILD_TYPE=Release
cmake --build build/cpp -j2
ctest --test-dir build/cpp --output-on-failure
cmake --install build/cpp --prefix build/cpp-prefix
cmake -S csrc/examples -B build/example -DCMAKE_PREFIX_PATH="$PWD/build/cpp-prefix"
cmake --build build/example -j2
build/example/relu_backward_demo

# The Gram example: random feature maps in, Gram matrices and guided backward out, checked
# against NumPy at 1e-5 relative.
GRAM_DIR=$(mktemp -d)
"$PY" -c "import numpy as np; np.save('$GRAM_DIR/in.npy', np.random.default_rng(0).standard_normal((2, 37, 9, 11), dtype=np.float32))"
build/example/gram_demo "$GRAM_DIR/in.npy" "$GRAM_DIR/gram.npy" "$GRAM_DIR/guided.npy"
"$PY" - "$GRAM_DIR" <<'PYEOF'
import sys
import numpy as np
d = sys.argv[1]
f = np.load(f"{d}/in.npy")
b, c, h, w = f.shape
f3 = f.reshape(b, c, h * w).astype(np.float64)
want = f3 @ f3.transpose(0, 2, 1) / (c * h * w)
got = np.load(f"{d}/gram.npy")
assert got.dtype == np.float32 and got.shape == (b, c, c), (got.dtype, got.shape)
np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
guided = np.load(f"{d}/guided.npy")
assert guided.dtype == np.float32 and guided.shape == f.shape, (guided.dtype, guided.shape)
np.testing.assert_allclose(guided, (f > 0).astype(np.float32), rtol=1e-5)
print("gram_demo matches numpy")
PYEOF
rm -rf "$GRAM_DIR"
