# Sourced by scripts/test.sh: PostgreSQL's server binaries for the tests of
# the PostgreSQL store (host/src/store/pg/test_server.rs starts a throwaway
# cluster of its own on a unix socket). Installed from Debian when missing,
# without the package's default cluster: nothing listens on port 5432.
if ! ls /usr/lib/postgresql/*/bin/initdb > /dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  mkdir -p /etc/postgresql-common
  [ -f /etc/postgresql-common/createcluster.conf ] \
    || echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
  apt-get install -y --no-install-recommends postgresql > /dev/null \
    || { apt-get update > /dev/null && apt-get install -y --no-install-recommends postgresql > /dev/null; }
fi
