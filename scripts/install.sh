#!/usr/bin/env bash
# Installs weft as a service on this machine, or into a staging root:
#   - the binary as /usr/local/bin/weft;
#   - a `weft` system user whose home, /var/lib/weft (mode 0700), holds the
#     node's identity, config.toml (with the cluster secret, mode 0600) and
#     store, made by `weft init` run as that user;
#   - the hardened systemd unit (deploy/systemd/weft.service), and with
#     --containers the drop-in that lets the node run containers
#     (weft.service.d/containers.conf: root and runc);
#   - `systemctl daemon-reload` and `systemctl enable --now weft` when
#     systemd runs;
# then prints how to join another machine to this cluster.
#
#   sudo scripts/install.sh                          # a new cluster
#   sudo scripts/install.sh --cluster-secret HEX \
#        --bootstrap /ip4/10.0.0.5/udp/4001/quic-v1/p2p/12D3KooW...   # join one
#
# Options:
#   --binary PATH           the weft binary (default: target/release/weft,
#                           built with `cargo build --release` if missing)
#   --cluster-secret HEX    join the cluster with this secret (64 hex digits;
#                           also read from $WEFT_CLUSTER_SECRET)
#   --bootstrap MULTIADDR   a peer of that cluster, repeatable
#   --containers            also install the drop-in for container tasks
#   --address IP            the address other machines reach this one on, for
#                           the join instructions (default: the first global
#                           IPv4 address)
#   --root DIR              install under DIR instead of / (a staging tree:
#                           no user is made and systemd is not touched)
#   --dry-run               print what would be done, change nothing
#
# Idempotent: running it again changes only what differs; an existing node
# keeps its identity and store, and its secret unless another is given.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
binary=
secret=${WEFT_CLUSTER_SECRET:-}
bootstrap=()
containers=0
address=
root=
dry=0

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { echo "install: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case $1 in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --cluster-secret) secret=${2:?--cluster-secret needs 64 hex digits}; shift 2 ;;
    --bootstrap) bootstrap+=("${2:?--bootstrap needs a multiaddr}"); shift 2 ;;
    --containers) containers=1; shift ;;
    --address) address=${2:?--address needs an IP address}; shift 2 ;;
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

if [ -n "$secret" ] && ! [[ $secret =~ ^[0-9a-fA-F]{64}$ ]]; then
  die "--cluster-secret must be 64 hex digits (network.cluster_secret in an existing node's config.toml)"
fi
for b in "${bootstrap[@]}"; do
  case $b in
    /*) ;;
    *) die "--bootstrap '$b' is not a multiaddr like /ip4/10.0.0.5/udp/4001/quic-v1/p2p/PEER_ID (\`weft node\` on that machine prints its addresses)" ;;
  esac
done
if [ -n "$root" ]; then
  [ "$dry" = 1 ] || mkdir -p "$root"
  root=$(cd "$root" 2>/dev/null && pwd || echo "$root")
  [ "$root" != / ] || root=
fi
if [ -z "$root" ] && [ "$dry" = 0 ] && [ "$(id -u)" -ne 0 ]; then
  die "installing into / needs root (run with sudo), or use --root DIR for a staging tree"
fi

bin_path=/usr/local/bin/weft
home=/var/lib/weft
unit_dir=/etc/systemd/system
user=weft

# Runs a command, or only prints it with --dry-run.
run() {
  if [ "$dry" = 1 ]; then
    printf 'would run:'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}
changed=0

# ---- the binary ------------------------------------------------------------------
if [ -z "$binary" ]; then
  binary=${CARGO_TARGET_DIR:-$repo/target}/release/weft
  if [ ! -x "$binary" ]; then
    echo "install: no $binary; building it (cargo build --release)"
    run cargo build --release --locked --manifest-path "$repo/Cargo.toml" -p weft-node --bin weft
  fi
fi
if [ "$dry" = 0 ] && [ ! -x "$binary" ]; then
  die "$binary is not an executable file (give one with --binary PATH)"
fi
if [ -f "$root$bin_path" ] && cmp -s "$binary" "$root$bin_path"; then
  echo "install: $root$bin_path is up to date"
else
  run install -D -m 0755 "$binary" "$root$bin_path"
  changed=1
fi

# ---- the user and its home -------------------------------------------------------
as_user=()
if [ -n "$root" ]; then
  echo "install: staging root $root: no system user is made; the home belongs to $(id -un)"
  run install -d -m 0700 "$root$home"
elif getent passwd "$user" >/dev/null; then
  echo "install: user $user exists"
  run install -d -m 0700 -o "$user" -g "$user" "$home"
  as_user=(runuser -u "$user" --)
else
  nologin=/usr/sbin/nologin
  [ -x "$nologin" ] || nologin=/bin/false
  run useradd --system --user-group --home-dir "$home" --no-create-home \
    --shell "$nologin" --comment "weft mesh daemon" "$user"
  run install -d -m 0700 -o "$user" -g "$user" "$home"
  as_user=(runuser -u "$user" --)
fi
if [ -n "$root" ]; then
  weft_cmd=("$root$bin_path" --home "$root$home")
else
  weft_cmd=("${as_user[@]}" "$bin_path" --home "$home")
fi

# ---- weft init -------------------------------------------------------------------
config=$root$home/config.toml
init_args=()
if [ -f "$config" ]; then
  current=$(sed -n 's/^cluster_secret = "\([0-9a-fA-F]*\)"$/\1/p' "$config" | head -n 1)
  if [ -n "$secret" ] && [ -n "$current" ] && [ "${secret,,}" != "${current,,}" ]; then
    die "$home is a node of another cluster (its config.toml has another network.cluster_secret); to move it, run as $user: weft --home $home init --force --cluster-secret HEX"
  fi
  if [ ${#bootstrap[@]} -gt 0 ] || { [ -n "$secret" ] && [ -z "$current" ]; }; then
    # keeps the identity, the store and every other setting
    init_args=(init --force)
    secret=${secret:-$current}
  else
    echo "install: $config exists; the node keeps its identity and cluster"
  fi
else
  init_args=(init)
fi
if [ ${#init_args[@]} -gt 0 ]; then
  for b in "${bootstrap[@]}"; do init_args+=(--bootstrap "$b"); done
  # the secret goes through the environment, not the command line (`ps`)
  if [ -n "$secret" ]; then
    export WEFT_CLUSTER_SECRET=$secret
  else
    unset WEFT_CLUSTER_SECRET
  fi
  if [ "$dry" = 1 ]; then
    printf 'would run:'; printf ' %q' "${weft_cmd[@]}" "${init_args[@]}"
    [ -z "$secret" ] || printf ' (with WEFT_CLUSTER_SECRET set)'
    printf '\n'
  else
    "${weft_cmd[@]}" "${init_args[@]}"
  fi
  changed=1
fi

# ---- the systemd unit ------------------------------------------------------------
install_file() { # SRC DEST
  if [ -f "$2" ] && cmp -s "$1" "$2"; then
    echo "install: $2 is up to date"
  else
    run install -D -m 0644 "$1" "$2"
    changed=1
  fi
}
install_file "$repo/deploy/systemd/weft.service" "$root$unit_dir/weft.service"
dropin=$root$unit_dir/weft.service.d/containers.conf
if [ "$containers" = 1 ]; then
  install_file "$repo/deploy/systemd/weft.service.d/containers.conf" "$dropin"
  command -v runc >/dev/null 2>&1 || [ -n "$root" ] ||
    echo "install: warning: runc is not installed; containers need it (apt-get install runc)" >&2
elif [ -f "$dropin" ]; then
  echo "install: no --containers: removing $dropin"
  run rm -f "$dropin"
  changed=1
fi

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  was_active=0
  systemctl is-active --quiet weft.service && was_active=1
  run systemctl daemon-reload
  run systemctl enable --now weft.service
  # a running node picks up a new binary, unit or config
  if [ "$changed" = 1 ] && [ "$was_active" = 1 ]; then
    run systemctl restart weft.service
  fi
  started=1
else
  started=0
  if [ -z "$root" ]; then
    echo "install: systemd is not running here; start the node with: ${as_user[*]} $bin_path --home $home daemon"
  fi
fi

# ---- how to join ----------------------------------------------------------------
peer=
addrs=
if [ "$dry" = 0 ]; then
  # with a running daemon `weft node` prints the addresses it listens on;
  # without, its id and config
  # (a just started daemon's addresses, waited for up to 10 s)
  for _ in $(seq 50); do
    node_json=$("${weft_cmd[@]}" node 2>/dev/null || true)
    case $node_json in *'"addrs"'*) break ;; esac
    [ "$started" = 1 ] || break
    sleep 0.2
  done
  peer=$(printf '%s\n' "$node_json" | sed -n 's/^ *"peer_id": "\([^"]*\)".*/\1/p' | head -n 1)
  addrs=$(printf '%s\n' "$node_json" | grep -o '"/ip[46]/[^"]*/udp/[0-9]*/quic-v1/p2p/[^"]*"' |
    tr -d '"' | grep -v -e '/ip4/127\.' -e '/ip6/::1/' || true)
fi
if [ -z "$address" ]; then
  address=$(ip -4 -o addr show scope global 2>/dev/null | awk '{sub(/\/.*/, "", $4); print $4; exit}' || true)
  [ -n "$address" ] || address=$(hostname -I 2>/dev/null | awk '{print $1}' || true)
  [ -n "$address" ] || address=THIS_MACHINES_IP
fi
if [ -n "$addrs" ] && [ -z "$root" ]; then
  join=$(printf '%s\n' "$addrs" | grep -F "/$address/" | head -n 1 || true)
  [ -n "$join" ] || join=$(printf '%s\n' "$addrs" | head -n 1)
else
  port=$(sed -n 's#^ *"/ip4/[^/]*/udp/\([0-9]*\)/quic-v1",\{0,1\}$#\1#p' "$config" 2>/dev/null | head -n 1 || true)
  join=/ip4/$address/udp/${port:-4001}/quic-v1/p2p/${peer:-PEER_ID}
fi

cat <<EOF

weft is installed$([ -n "$root" ] && echo " under $root").
  binary:  $bin_path
  home:    $home   (identity, config.toml with the cluster secret, store; user $user, mode 0700)
  unit:    $unit_dir/weft.service$([ "$containers" = 1 ] && echo " + weft.service.d/containers.conf")
  node:    ${peer:-(after weft init)}
  reach:   $join

Status and logs:   systemctl status weft; journalctl -u weft -f
Talk to it:        sudo -u $user weft --home $home peers

To join another machine to this cluster, open these ports between them:
4001/tcp and 4001/udp (the mesh), 4002/udp (the data plane). Then on the other
machine, with this machine's cluster secret (network.cluster_secret in
$home/config.toml here, readable by root and $user only):

  secret=\$(ssh root@$address cat $home/config.toml | sed -n 's/^cluster_secret = "\(.*\)"\$/\1/p')
  sudo scripts/install.sh --cluster-secret "\$secret" --bootstrap $join

or by hand, without the service:

  weft init --cluster-secret "\$secret" --bootstrap $join
  weft daemon
  weft peers        # lists this machine
EOF
