#!/usr/bin/env bash
# Installs what the gateway and its tests need on Debian 12, idempotently:
# Debian packages (when missing) and the Python workspace in .venv/ (editable installs).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3-venv python3-dev redis-server clamav-daemon clamav-testfiles tesseract-ocr tesseract-ocr-eng
  tesseract-ocr-deu fonts-dejavu-core swaks libnet-ssleay-perl libio-socket-ssl-perl nsd slapd ldap-utils)
BINARIES=(redis-server clamd tesseract swaks nsd slapd ldapadd)

missing=0
for b in "${BINARIES[@]}"; do command -v "$b" >/dev/null 2>&1 || missing=1; done
[ -d /usr/share/clamav-testfiles ] || missing=1
# Debian's python3 needs python3-venv for `python3 -m venv` (ensurepip).
"${PYTHON:-python3}" -c "import ensurepip, venv" 2>/dev/null || missing=1
[ -e /usr/share/tesseract-ocr/5/tessdata/eng.traineddata ] || [ -e /usr/share/tesseract-ocr/4.00/tessdata/eng.traineddata ] || missing=1
# German too: the example configuration (ocr_languages: [eng, deu]) and the OCR configuration test use it.
[ -e /usr/share/tesseract-ocr/5/tessdata/deu.traineddata ] || [ -e /usr/share/tesseract-ocr/4.00/tessdata/deu.traineddata ] || missing=1
if [ "$missing" = 1 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: missing system packages (${APT_PACKAGES[*]}); run as root or install them" >&2
    exit 1
  fi
  echo "bootstrap: installing Debian packages" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv" >&2
  "$PYTHON" -m venv .venv
fi
# Reinstall only when a pyproject changed since the last install.
stamp=.venv/.mailgw-installed
hash=$(cat libs/pyproject.toml services/*/pyproject.toml tools/*/pyproject.toml requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$hash" ]; then
  echo "bootstrap: installing Python packages into .venv" >&2
  args=(-e libs)
  for pkg in services/*/ tools/*/; do args+=(-e "$pkg"); done
  log=$(mktemp)
  if ! .venv/bin/pip install -q "${args[@]}" -r requirements-dev.txt >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"
    echo "bootstrap: pip install failed" >&2
    exit 1
  fi
  # Some machines' pip configuration names a local index that does not exist: drop that noise.
  grep -v "^WARNING: Location" "$log" >&2 || true
  rm -f "$log"
  echo "$hash" > "$stamp"
fi
