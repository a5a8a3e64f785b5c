#!/usr/bin/env bash
# Set up everything edgevit needs on a fresh machine: the Fashion-MNIST package, headless Chromium (the report test
# renders report.html in it), a virtual env at .venv/, and edgevit installed (editable) with the extras given as
# arguments (default: dev).
#   bash scripts/bootstrap.sh            # .venv with edgevit[dev]
#   EXTRAS=dev,openvino bash scripts/bootstrap.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${EXTRAS:-dev}"
PY="${PYTHON:-python3}"

# Debian packages: the dataset, headless Chromium for the report test (renders report.html, takes a screenshot),
# and OpenSSH's server (the remote-profiling tests start one on 127.0.0.1)
APT_PKGS=()
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] && [ -z "${EDGEVIT_FASHION_MNIST_DIR:-}" ]; then
  APT_PKGS+=(dataset-fashion-mnist)
fi
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  APT_PKGS+=(chromium)
fi
[ -x /usr/sbin/sshd ] || APT_PKGS+=(openssh-server)
if [ ${#APT_PKGS[@]} -gt 0 ]; then
  echo "[bootstrap] installing ${APT_PKGS[*]} (Debian packages)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${APT_PKGS[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=".venv/.edgevit-installed-$(echo "$EXTRAS" | tr ',' '-')"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[bootstrap] installing edgevit[$EXTRAS] into .venv (the first time downloads torch, a few GB)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
  touch "$stamp"
fi
.venv/bin/edgevit --version
# Say what torch this .venv holds: pip takes the newest release that pyproject.toml and any pip cap allow.
.venv/bin/python - <<'EOF'
import torch, torchvision
build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
print(f"[bootstrap] .venv has torch {torch.__version__} ({build}), torchvision {torchvision.__version__}")
EOF
caps=$(.venv/bin/python -m pip config list 2>/dev/null | sed -n "s/^[a-z]*\.constraint='\(.*\)'$/\1/p"; echo "${PIP_CONSTRAINT:-}")
for f in $caps; do
  [ -f "$f" ] && grep -E '^ *torch(vision)? *[<=~!]' "$f" | sed "s|^|[bootstrap] pip constraint from $f: |" || true
done
