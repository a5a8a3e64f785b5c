#!/usr/bin/env bash
# Configure and build the C++ consumer against the OpenVINO wheel in the project's virtualenv.
#   examples/cpp/build.sh [BUILD_DIR]        (default: examples/cpp/build)
# Env: PYTHON (default: .venv/bin/python, else python3), JOBS (default: 2), CMAKE_BUILD_TYPE (default: Release).
# Prints the path of the built binary on its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${1:-$here/build}"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python="python3"; fi
fi

for tool in cmake c++; do
  command -v "$tool" >/dev/null || { echo "build.sh: '$tool' not found; install cmake and a C++17 compiler (apt-get install cmake g++)" >&2; exit 3; }
done
ov_dir="$("$python" -c "import openvino, os; print(os.path.join(os.path.dirname(openvino.__file__), 'cmake'))" 2>/dev/null)" || {
  echo "build.sh: $python cannot import openvino; install it with: $python -m pip install 'edgevit[openvino]'" >&2; exit 3; }
[[ -f "$ov_dir/OpenVINOConfig.cmake" ]] || { echo "build.sh: no OpenVINOConfig.cmake in $ov_dir" >&2; exit 3; }

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$here" -B "$build" "${generator[@]}" -DOpenVINO_DIR="$ov_dir" \
        -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-Release}" >/dev/null
else
  cmake -S "$here" -B "$build" -DOpenVINO_DIR="$ov_dir" >/dev/null  # re-point at this venv's OpenVINO
fi
cmake --build "$build" -j "${JOBS:-2}"
echo "$build/classify"
