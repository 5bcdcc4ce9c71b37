# Sourced by the test scripts: a virtual environment under target/ with the
# Python packages the tests use (aiosmtpd for the SMTP peer, dkimpy for its
# independent DKIM check, prometheus_client to parse /metrics, Playwright to
# drive Chromium through the dashboard, schemathesis for the API fuzz run),
# first on PATH, so the system's Python is never changed.
venv="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/py"
if [ ! -x "$venv/bin/python3" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python3" -m pip install --quiet --disable-pip-version-check aiosmtpd 'dkimpy[ed25519]>=1.1,<2' 'prometheus_client>=0.20,<1' 'schemathesis>=4,<5' 'playwright>=1.45,<2'
export PATH="$venv/bin:$PATH"
