#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian/Ubuntu machine:
# the embedded Rust targets, QEMU (Arm and RISC-V) and the onnxruntime wheel
# (its libonnxruntime.so is what the `ort` backend loads), and the
# tflite-micro wheel (TFLite Micro's interpreter, for the TFLite export's
# bit-exactness test), headless Chromium and the DejaVu font (the report's
# rendering test). Idempotent.
set -euo pipefail

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "setup: need root for: $*" >&2; return 1; fi
}

echo "setup: rust targets"
rustup target add thumbv7m-none-eabi thumbv6m-none-eabi thumbv7em-none-eabihf riscv32imac-unknown-none-elf >/dev/null

if ! command -v qemu-system-arm >/dev/null || ! command -v qemu-system-riscv32 >/dev/null; then
    echo "setup: qemu"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    pkgs="qemu-system-arm qemu-system-misc"
    if ! as_root apt-get install -y -qq --no-install-recommends $pkgs >/dev/null; then
        # Some images carry a newer qemu-utils from backports that conflicts
        # with the distribution's qemu-system packages; tinykd does not need it.
        as_root apt-get install -y -qq --no-install-recommends $pkgs qemu-utils- >/dev/null
    fi
fi

if ! command -v chromium >/dev/null || [ ! -d /usr/share/fonts/truetype/dejavu ]; then
    # Headless Chromium renders report.html in a test; DejaVu is the plots' font.
    echo "setup: chromium, fonts"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

if ! python3 -c "import onnxruntime" 2>/dev/null; then
    echo "setup: onnxruntime wheel"
    python3 -m pip install --quiet --disable-pip-version-check "onnxruntime==1.31.*" \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "onnxruntime==1.31.*"
fi
if ! python3 -c "import tflite_micro" 2>/dev/null; then
    # TensorFlow Lite Micro's interpreter: the reference the TFLite export is tested against.
    echo "setup: tflite-micro wheel"
    python3 -m pip install --quiet --disable-pip-version-check "tflite-micro==0.dev20261023182759" \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "tflite-micro==0.dev20261023182759"
fi
echo "setup: done"
