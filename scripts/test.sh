#!/usr/bin/env bash
# Install everything the tests need, then run every test: Python (pytest) and C++ (ctest),
# and build the C++ example against the installed library. .ci/run calls this script.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Headless Chromium for the report test (Debian package).
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
export CNNVIZ_REQUIRE_CHROMIUM=1

# The CPU wheel of torch first, so the extra's range does not pull a CUDA build.
"$PY" -m pip install -q "torch==2.13.0"
"$PY" -m pip install -q -e ".[torch,test]"

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
