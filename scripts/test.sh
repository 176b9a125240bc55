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
"$PY" -m pip install -q -e ".[torch,test,segmentation,distributed,lint,deploy,browser]"

# Keras (tf2onnx) and Paddle (paddle2onnx) exporters for tests/core/test_exporters_tf_paddle.py,
# in their own virtual environment: paddle2onnx pins onnx<=1.17 and tensorflow pulls keras, grpc...
# The tests run its Python in a subprocess to export models; cnnviz checks them here. Measured:
# ~40 s to install from scratch (wheels: tensorflow-cpu 274 MB, paddlepaddle 195 MB), 2.6 GB on
# disk; a cached venv costs ~3 s. onnxruntime, onnx_graphsurgeon and sympy are what paddle2onnx's
# optimizer (polygraphy) would otherwise pip-install in the middle of an export.
EXPORTERS_VENV=${CNNVIZ_EXPORTERS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/cnnviz/exporters-venv}
[ -x "$EXPORTERS_VENV/bin/python" ] || "$PY" -m venv "$EXPORTERS_VENV"
"$EXPORTERS_VENV/bin/python" -m pip install -q "tensorflow-cpu==2.21.0" "tf2onnx==1.17.0" \
  "paddlepaddle==3.3.1" "paddle2onnx==2.1.0" "onnxruntime==1.32.0" "onnx_graphsurgeon==0.6.1" \
  "sympy==1.14.0"
export CNNVIZ_EXPORTERS_PYTHON="$EXPORTERS_VENV/bin/python" CNNVIZ_REQUIRE_EXPORTERS=1

# Lint, format and types: both packages, tests and benchmarks (zero findings, no blanket ignores).
"$PY" -m ruff check .
"$PY" -m ruff format --check .
"$PY" -m mypy cnnviz cnnviz_core

# The OpenVINO C++ example (an exported explainer run from C++), against the C++ runtime the
# openvino wheel ships; tests/cnnviz/test_deploy_openvino.py runs it and checks its maps.
OPENVINO_CMAKE=$("$PY" -c "import openvino, pathlib; print(pathlib.Path(openvino.__file__).parent / 'cmake')")
cmake -S csrc/examples/openvino -B build/openvino-example -DOpenVINO_DIR="$OPENVINO_CMAKE" \
  -DCMAKE_BUILD_TYPE=Release
cmake --build build/openvino-example -j2
export CNNVIZ_EXPLAIN_OPENVINO="$PWD/build/openvino-example/explain_openvino"

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
