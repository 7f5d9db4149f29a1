#!/usr/bin/env bash
# Rebuild every dataset and teacher under models/ from scratch.
#
# Usage: models/scripts/regenerate_all.sh [python]
# The optional argument (or $PYTHON) names the interpreter of a virtual
# environment that has models/requirements.txt installed; it defaults to
# /opt/modelsenv/bin/python if that exists, else python3.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
default_py=python3
[ -x /opt/modelsenv/bin/python ] && default_py=/opt/modelsenv/bin/python
py="${1:-${PYTHON:-$default_py}}"

run() {
    echo "== $1"
    local start=$SECONDS
    "$py" -W ignore::DeprecationWarning "$here/$1"
    echo "== $1 done in $((SECONDS - start)) s"
    echo
}

run make_data.py
run train_digits_svc.py
run train_digits_forest.py
run train_digits_teacher.py
run train_mnist1d_teacher.py
