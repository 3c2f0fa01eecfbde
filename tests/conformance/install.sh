#!/usr/bin/env bash
# Install the Autobahn|Testsuite (`wstest`) into a Python 2.7 virtualenv outside the package.
#
#   tests/conformance/install.sh            # idempotent: a stamp file skips a finished install
#
# The suite is Python 2 code, so it gets its own virtualenv (default .cache/ab27, override with
# AB27_DIR) built from pyenv's 2.7.18 (override with TIDINGS_PYTHON2=/path/to/python2.7).
# Without Python 2.7 this prints why and exits 0, so `make install` still succeeds and the
# conformance test skips with the same reason; any other failure exits non-zero.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dest="${AB27_DIR:-$root/.cache/ab27}"
boot="$dest-boot"
requirements="$here/requirements-py27.txt"
stamp="$dest/.installed"

find_python2() {
    if [ -n "${TIDINGS_PYTHON2:-}" ]; then
        echo "$TIDINGS_PYTHON2"
        return
    fi
    local pyenv_root
    pyenv_root="$( (command -v pyenv >/dev/null 2>&1 && pyenv root) || echo "$HOME/.pyenv")"
    for candidate in "$pyenv_root/versions/2.7.18/bin/python2.7" "$(command -v python2.7 || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            echo "$candidate"
            return
        fi
    done
}

# The stamp records what was installed: a changed pin list (or this script) reinstalls.
want="$(cat "$requirements" "$0" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$dest/bin/wstest" ]; then
    exit 0
fi

python2="$(find_python2)"
if [ -z "$python2" ] || ! "$python2" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null; then
    cat >&2 <<MSG
*****************************************************************************
  Python 2.7 not found: the Autobahn WebSocket conformance suite is NOT
  installed and its test will be SKIPPED. It needs pyenv's 2.7.18
  (\$(pyenv root)/versions/2.7.18) or TIDINGS_PYTHON2=/path/to/python2.7.
*****************************************************************************
MSG
    exit 0
fi

echo "installing the Autobahn Testsuite into $dest (Python 2.7: $python2)"
rm -rf "$dest" "$boot"
mkdir -p "$(dirname "$dest")"
if [ -z "${AB27_DIR:-}" ] && [ ! -f "$root/.cache/.gitignore" ]; then
    echo '*' >"$root/.cache/.gitignore"  # a cache of tools, never committed
fi
# virtualenv goes into a --target directory so nothing is added to the pyenv installation;
# 20.15.1 is the newest that installs on Python 2. -qq: the machine's pip config names absent local indexes
# and Python 2's pip warns about each of them.
"$python2" -m pip install -qq --disable-pip-version-check --target "$boot" 'virtualenv==20.15.1'
PYTHONPATH="$boot" "$python2" -m virtualenv --quiet "$dest"
"$dest/bin/pip" install -qq --disable-pip-version-check --no-deps -r "$requirements"
"$dest/bin/wstest" --help >/dev/null
rm -rf "$boot"
echo "$want" >"$stamp"
echo "Autobahn Testsuite installed: $dest/bin/wstest"
