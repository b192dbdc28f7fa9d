#!/usr/bin/env bash
# Makes (once) a Python virtual environment for the tests and prints its
# directory on the last line.
#
#   scripts/python-env.sh        # target/pyenv (or $WEFT_PYENV): the real
#                                # clients in scripts/requirements-test.txt
#                                # (boto3, awscli, mlflow-skinny, schemathesis,
#                                # pytest, kubernetes-validate) and weft's own
#                                # Python client (python/, editable)
#   scripts/python-env.sh dvc    # target/pyenv-dvc: scripts/requirements-dvc.txt
#                                # (dvc-s3 pins an older botocore)
#
# Idempotent: reinstalls only when the requirements change.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
which="${1:-test}"
case "$which" in
  test) env="${WEFT_PYENV:-$root/target/pyenv}" ;;
  dvc) env="${WEFT_PYENV_DVC:-$root/target/pyenv-dvc}" ;;
  *) echo "python-env: unknown environment '$which' (test or dvc)" >&2; exit 2 ;;
esac
req="$root/scripts/requirements-$which.txt"

if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "python-env: need root to install python3-venv (run: sudo apt-get install -y python3-venv)" >&2
    exit 1
  fi
  echo "python-env: installing python3-venv" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq python3-venv >&2
fi

client=""
[ "$which" = test ] && [ -f "$root/python/pyproject.toml" ] && client="$root/python"
stamp="$env/.weft-requirements"
want="$({ cat "$req"; [ -z "$client" ] || cat "$client/pyproject.toml"; } | sha256sum | cut -d' ' -f1)"
if [ -x "$env/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$env"
  exit 0
fi
echo "python-env: creating $env" >&2
python3 -m venv "$env"
"$env/bin/pip" install -q --disable-pip-version-check --upgrade pip >&2
"$env/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
if [ -n "$client" ]; then
  "$env/bin/pip" install -q --disable-pip-version-check -e "$client" >&2
fi
echo "$want" >"$stamp"
echo "$env"
