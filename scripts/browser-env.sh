# Sourced by scripts/test.sh: what the dashboard's browser test needs.
# - Chromium from Debian (Playwright's own browser download cannot work
#   here); installed when missing, which needs root, as CI runs.
# - axe-core from the npm registry, checked against the registry's
#   sha512 and unpacked to target/axe/axe.min.js (no Node needed).
# Playwright itself comes from PyPI with the other Python packages
# (scripts/py-env.sh).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! command -v chromium > /dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends chromium > /dev/null \
    || { apt-get update > /dev/null && apt-get install -y --no-install-recommends chromium > /dev/null; }
fi
axe_version=4.14.1
axe_sha512="FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
if [ ! -f "$root/target/axe/axe-$axe_version.min.js" ]; then
  mkdir -p "$root/target/axe"
  python3 - "$root/target/axe" "$axe_version" "$axe_sha512" <<'PY'
import base64, hashlib, io, sys, tarfile, urllib.request
out, version, sha512 = sys.argv[1:4]
url = f"https://registry.npmjs.org/axe-core/-/axe-core-{version}.tgz"
data = urllib.request.urlopen(url, timeout=120).read()
if base64.b64encode(hashlib.sha512(data).digest()).decode() != sha512:
    sys.exit(f"axe-core {version}: the download does not match the registry's sha512")
with tarfile.open(fileobj=io.BytesIO(data)) as t:
    js = t.extractfile("package/axe.min.js").read()
open(f"{out}/axe-{version}.min.js", "wb").write(js)
PY
fi
cp "$root/target/axe/axe-$axe_version.min.js" "$root/target/axe/axe.min.js"
