#!/bin/sh
# The one script that installs diffuserve's Python package. The Docker image and CI both
# run it, so the install steps they test and ship cannot drift apart.
#
#   docker/install.sh EXTRAS [--editable]      (run from the repository root)
#
#   EXTRAS            optional-dependency groups: "serve" in the image, "dev" in CI
#   --editable        pip install -e (CI); the image installs a regular copy
#   PYTHON            interpreter whose pip is used (default: python3 on PATH)
#   TORCH_INDEX_URL   install torch from this index first (the image: the CUDA wheels);
#                     unset: torch comes from the default index like every other dependency
#   TORCH_SPEC        version specifier for that torch, e.g. "==2.5.1"
#   WITH_FLASH_ATTN   1: also install flash-attn (GPU images; needs torch with CUDA)
set -eu

if [ "$#" -lt 1 ]; then
    echo "usage: $0 EXTRAS [--editable]" >&2
    exit 2
fi
extras="$1"
editable=""
if [ "${2:-}" = "--editable" ]; then
    editable="-e"
fi
python="${PYTHON:-python3}"

if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$python" -m pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" "torch${TORCH_SPEC:-}"
fi
# shellcheck disable=SC2086  # $editable is empty or one flag
"$python" -m pip install --no-cache-dir $editable ".[${extras}]"
if [ "${WITH_FLASH_ATTN:-0}" = "1" ]; then
    # flash-attn's setup imports torch, so it must see the torch installed above.
    "$python" -m pip install --no-cache-dir --no-build-isolation "flash-attn>=2.6"
fi
