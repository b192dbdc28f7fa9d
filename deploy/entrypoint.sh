#!/bin/sh
# The image's entrypoint. Makes the node's home, then runs weft with the
# given arguments (default: `daemon`):
#   - with $WEFT_CONFIG (a config.toml mounted from a Kubernetes ConfigMap),
#     that file becomes the home's config.toml at every start, and the cluster
#     secret comes from $WEFT_CLUSTER_SECRET (a Secret), never written to disk;
#   - without it, `weft init` makes the home on first start (with
#     $WEFT_CLUSTER_SECRET when set, else a new cluster's secret).
# `weft daemon` also reads $WEFT_BOOTSTRAP (comma-separated multiaddrs).
set -eu
home=${WEFT_HOME:-/var/lib/weft}
mkdir -p "$home"
chmod 0700 "$home"
if [ -n "${WEFT_CONFIG:-}" ]; then
  # a temporary file and a rename: a reader never sees half a config
  cp "$WEFT_CONFIG" "$home/config.toml.tmp"
  chmod 0600 "$home/config.toml.tmp"
  mv -f "$home/config.toml.tmp" "$home/config.toml"
elif [ ! -f "$home/config.toml" ]; then
  weft --home "$home" init
fi
exec weft --home "$home" "$@"
