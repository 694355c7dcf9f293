#!/usr/bin/env bash
# Create .venv/ with a Python >= 3.12 and install the project into it, which
# compiles its C kernels, then compile the LeNet tutorial's functions into
# PyTensor's cache, so that the first `make run` trains at once (once; again
# only when the package metadata or the C sources change). Prints nothing when
# already up to date.
set -euo pipefail
cd "$(dirname "$0")/.."

is_suitable() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }

find_python() {
    local candidates=(python3.13 python3.12 python3)
    if command -v pyenv >/dev/null 2>&1; then
        local root; root=$(pyenv root)
        # pyenv's shims refuse versions that are not selected: use the binaries
        for dir in $(ls -d "$root"/versions/3.1[2-9]* 2>/dev/null | sort -rV); do
            candidates+=("$dir/bin/python3")
        done
    fi
    for candidate in "${candidates[@]}"; do
        if is_suitable "$candidate"; then command -v "$candidate" || echo "$candidate"; return 0; fi
    done
    echo "error: no Python >= 3.12 found (tried ${candidates[*]}); install one, e.g. 'pyenv install 3.12'" >&2
    return 1
}

if [ ! -x .venv/bin/python ] || ! is_suitable .venv/bin/python; then
    rm -rf .venv
    python=$(find_python)
    echo "Creating .venv with $("$python" --version)" >&2
    "$python" -m venv .venv
fi
# what the installation depends on: the package metadata and the C kernels it compiles
stamp=.venv/.installed
inputs=$(cat pyproject.toml setup.cfg setup.py deeplearning_tutorial/ops/kernels/csrc/* | sha256sum)
if [ "$(cat "$stamp" 2>/dev/null)" != "$inputs" ] || ! ls deeplearning_tutorial/ops/kernels/_kernels.*.so >/dev/null 2>&1; then
    .venv/bin/python -m pip install --quiet --upgrade pip >&2
    .venv/bin/python -m pip install --quiet -e '.[test,lint,docs]' >&2
    .venv/bin/python scripts/precompile.py >&2 \
        || echo "warning: precompiling failed (see above); the first make run compiles instead" >&2
    echo "$inputs" > "$stamp"
fi
