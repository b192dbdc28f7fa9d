#!/usr/bin/env bash
# The packaging, checked: the scripts pass shellcheck, the systemd unit and
# its drop-in pass `systemd-analyze verify`, the Kubernetes manifest passes
# `kubernetes-validate --strict`, scripts/install.sh installs into a staging
# root (and again, unchanged; --dry-run changes nothing), and the README's
# two-host walk-through runs on two network namespaces joined by a veth pair
# (198.18.0.5 and 198.18.0.6): `weft init`, `weft daemon`, `weft init
# --cluster-secret ... --bootstrap ...` on the second host, `weft peers` on
# each shows the other, `weft add` on one and `weft get` on the other.
#
# A part that cannot run here (no systemd-analyze, no permission for
# `ip netns`) is skipped with the reason printed. Everything made is removed
# on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
start=$(date +%s)

say() { echo "test-deploy: $*"; }
fail() { echo "test-deploy: FAIL: $*" >&2; exit 1; }

cargo build -q --locked -p weft-node --bin weft
weft=${CARGO_TARGET_DIR:-$root/target}/debug/weft

work=$(mktemp -d /tmp/weft-test-deploy.XXXXXX)
tag=$$
ns_a=weft-a-$tag ns_b=weft-b-$tag
veth_a=wfa$tag veth_b=wfb$tag
pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null
  done
  for p in "${pids[@]}"; do
    wait "$p" 2>/dev/null
  done
  ip netns del "$ns_a" 2>/dev/null
  ip netns del "$ns_b" 2>/dev/null
  ip link del "$veth_a" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# ---- shellcheck -------------------------------------------------------------------
if ! command -v shellcheck >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    say "installing shellcheck"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null; }
  fi
fi
if command -v shellcheck >/dev/null 2>&1; then
  checked=(scripts/install.sh scripts/test-deploy.sh deploy/entrypoint.sh)
  [ ! -f scripts/bench/s3.sh ] || checked+=(scripts/bench/s3.sh)
  shellcheck "${checked[@]}"
  say "shellcheck: ok"
else
  fail "shellcheck is missing (apt-get install shellcheck)"
fi

# ---- the image recipe: every COPY source exists and is not ignored ----------------
while read -r src; do
  [ -e "$src" ] || fail "deploy/Containerfile copies $src, which does not exist"
  if grep -qxF "$src" .dockerignore; then
    fail "deploy/Containerfile copies $src, which .dockerignore leaves out"
  fi
done < <(awk '/^COPY / && !/--from=/ { for (i = 2; i < NF; i++) print $i }' deploy/Containerfile)
say "Containerfile: every COPY source is there"

# ---- systemd ------------------------------------------------------------------------
if command -v systemd-analyze >/dev/null 2>&1; then
  units=$work/units
  mkdir -p "$units/weft.service.d"
  # the binary is not in /usr/local/bin here: point the unit at this build
  sed "s#^ExecStart=/usr/local/bin/weft #ExecStart=$weft #" deploy/systemd/weft.service >"$units/weft.service"
  out=$(SYSTEMD_UNIT_PATH="$units:" systemd-analyze verify --man=no "$units/weft.service" 2>&1) ||
    fail "systemd-analyze verify weft.service: $out"
  [ -z "$out" ] || fail "systemd-analyze verify weft.service warns: $out"
  cp deploy/systemd/weft.service.d/containers.conf "$units/weft.service.d/"
  out=$(SYSTEMD_UNIT_PATH="$units:" systemd-analyze verify --man=no "$units/weft.service" 2>&1) ||
    fail "systemd-analyze verify weft.service + containers.conf: $out"
  [ -z "$out" ] || fail "systemd-analyze verify weft.service + containers.conf warns: $out"
  say "systemd-analyze verify: ok (unit, and unit + containers drop-in)"
else
  say "skipped systemd-analyze verify: systemd-analyze is not installed"
fi

# ---- Kubernetes ---------------------------------------------------------------------
pyenv=$(scripts/python-env.sh | tail -n 1)
"$pyenv/bin/kubernetes-validate" --strict --quiet deploy/k8s/daemonset.yaml ||
  fail "deploy/k8s/daemonset.yaml does not validate"
kinds=$(grep -c '^kind: ' deploy/k8s/daemonset.yaml)
[ "$kinds" -eq 5 ] || fail "deploy/k8s/daemonset.yaml has $kinds resources, expected 5"
say "kubernetes-validate --strict: ok ($kinds resources)"

# ---- scripts/install.sh into a staging root -------------------------------------------
secret=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
boot=/ip4/198.18.0.5/udp/4001/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN
stage=$work/stage
scripts/install.sh --root "$stage" --dry-run --binary "$weft" --cluster-secret "$secret" \
  --bootstrap "$boot" --containers >"$work/dry.log"
[ ! -e "$stage" ] || fail "install.sh --dry-run made $stage"
grep -q '^would run: install -D -m 0755 ' "$work/dry.log" || fail "--dry-run does not say it installs the binary"
grep -q 'init --bootstrap' "$work/dry.log" || fail "--dry-run does not say it runs weft init"
if grep -q "$secret" "$work/dry.log"; then fail "--dry-run prints the cluster secret"; fi

scripts/install.sh --root "$stage" --binary "$weft" --cluster-secret "$secret" \
  --bootstrap "$boot" --containers --address 198.18.0.9 >"$work/install.log"
mode() { stat -c %a "$1"; }
[ -x "$stage/usr/local/bin/weft" ] || fail "the binary is not installed"
[ "$(mode "$stage/usr/local/bin/weft")" = 755 ] || fail "the binary is not installed with mode 0755"
cmp -s "$weft" "$stage/usr/local/bin/weft" || fail "the installed binary differs"
[ "$(mode "$stage/var/lib/weft")" = 700 ] || fail "the home's mode is $(mode "$stage/var/lib/weft"), not 0700"
for f in config.toml identity api-token; do
  [ -f "$stage/var/lib/weft/$f" ] || fail "weft init made no $f"
  [ "$(mode "$stage/var/lib/weft/$f")" = 600 ] || fail "$f's mode is $(mode "$stage/var/lib/weft/$f"), not 0600"
done
grep -qx "cluster_secret = \"$secret\"" "$stage/var/lib/weft/config.toml" || fail "config.toml lacks the cluster secret"
grep -qF "\"$boot\"" "$stage/var/lib/weft/config.toml" || fail "config.toml lacks the bootstrap peer"
cmp -s deploy/systemd/weft.service "$stage/etc/systemd/system/weft.service" || fail "the unit is not installed"
cmp -s deploy/systemd/weft.service.d/containers.conf "$stage/etc/systemd/system/weft.service.d/containers.conf" ||
  fail "the containers drop-in is not installed"
peer=$("$weft" --home "$stage/var/lib/weft" node | sed -n 's/^ *"peer_id": "\([^"]*\)".*/\1/p' | head -n 1)
[ -n "$peer" ] || fail "weft node prints no peer id for the staged home"
grep -qF "/ip4/198.18.0.9/udp/4001/quic-v1/p2p/$peer" "$work/install.log" ||
  fail "install.sh does not print this node's address to join: $(cat "$work/install.log")"
grep -qF "/var/lib/weft/config.toml" "$work/install.log" || fail "install.sh does not say where the secret is"
if grep -q "$secret" "$work/install.log"; then fail "install.sh prints the cluster secret"; fi
# again: the same node, nothing reinstalled; without --containers the drop-in goes
id_before=$(sha256sum <"$stage/var/lib/weft/identity")
scripts/install.sh --root "$stage" --binary "$weft" >"$work/again.log"
grep -q "weft is up to date" "$work/again.log" || fail "a second run reinstalled the binary"
grep -q "weft.service is up to date" "$work/again.log" || fail "a second run reinstalled the unit"
[ "$(sha256sum <"$stage/var/lib/weft/identity")" = "$id_before" ] || fail "a second run changed the identity"
grep -qx "cluster_secret = \"$secret\"" "$stage/var/lib/weft/config.toml" || fail "a second run changed the secret"
[ ! -e "$stage/etc/systemd/system/weft.service.d/containers.conf" ] ||
  fail "a run without --containers left the drop-in"
other=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
if scripts/install.sh --root "$stage" --binary "$weft" --cluster-secret "$other" >"$work/other.log" 2>&1; then
  fail "install.sh moved a node to another cluster without being asked"
fi
grep -q "another cluster" "$work/other.log" || fail "install.sh's refusal does not say why: $(cat "$work/other.log")"
if scripts/install.sh --root "$stage" --binary "$weft" --cluster-secret nothex >/dev/null 2>&1; then
  fail "install.sh took a malformed secret"
fi
say "install.sh: dry run, staging install, second run and refusals: ok"

# ---- two hosts ----------------------------------------------------------------------------
if ! ip netns add "$ns_a" 2>"$work/netns.err"; then
  say "skipped the two-host walk-through: ip netns is not permitted here ($(head -n 1 "$work/netns.err"))"
  say "ok in $(($(date +%s) - start)) s"
  exit 0
fi
ip netns add "$ns_b"
ip link add "$veth_a" type veth peer name "$veth_b"
ip link set "$veth_a" netns "$ns_a"
ip link set "$veth_b" netns "$ns_b"
ip -n "$ns_a" addr add 198.18.0.5/24 dev "$veth_a"
ip -n "$ns_b" addr add 198.18.0.6/24 dev "$veth_b"
for n in "$ns_a" "$ns_b"; do ip -n "$n" link set lo up; done
ip -n "$ns_a" link set "$veth_a" up
ip -n "$ns_b" link set "$veth_b" up

on_a() { ip netns exec "$ns_a" "$weft" --home "$work/a" "$@"; }
on_b() { ip netns exec "$ns_b" "$weft" --home "$work/b" "$@"; }
wait_api() { # NAME HOME
  for _ in $(seq 100); do
    [ -s "$2/api" ] && return 0
    sleep 0.1
  done
  fail "host $1's daemon did not start: $(tail -n 20 "$work/$1.log")"
}

# host A: a new cluster; mDNS off, so B finds A through its bootstrap address only
on_a init >/dev/null
ip netns exec "$ns_a" "$weft" --home "$work/a" daemon --no-mdns >"$work/a.log" 2>&1 &
pids+=($!)
wait_api a "$work/a"
peer_a=$(on_a node | sed -n 's/^ *"peer_id": "\([^"]*\)".*/\1/p' | head -n 1)
secret_a=$(sed -n 's/^cluster_secret = "\(.*\)"$/\1/p' "$work/a/config.toml")
[ -n "$peer_a" ] || fail "host A has no peer id"
[ -n "$secret_a" ] || fail "host A's config.toml has no cluster secret"
on_a node | grep -qF "\"/ip4/198.18.0.5/udp/4001/quic-v1/p2p/$peer_a\"" ||
  fail "host A does not list 198.18.0.5 among its addresses: $(on_a node)"

# host B joins: the README's commands
on_b init --cluster-secret "$secret_a" --bootstrap "/ip4/198.18.0.5/udp/4001/quic-v1/p2p/$peer_a" >/dev/null
ip netns exec "$ns_b" "$weft" --home "$work/b" daemon --no-mdns >"$work/b.log" 2>&1 &
pids+=($!)
wait_api b "$work/b"
peer_b=$(on_b node | sed -n 's/^ *"peer_id": "\([^"]*\)".*/\1/p' | head -n 1)

seen=0
for _ in $(seq 150); do
  if on_a peers --json 2>/dev/null | grep -qF "\"$peer_b\"" &&
    on_b peers --json 2>/dev/null | grep -qF "\"$peer_a\""; then
    seen=1
    break
  fi
  sleep 0.1
done
[ "$seen" = 1 ] || fail "the hosts do not list each other: A: $(on_a peers 2>&1) B: $(on_b peers 2>&1)"
on_b peers | grep -q '198\.18\.0\.5' || fail "weft peers on B does not show A's address: $(on_b peers)"
say "weft peers: each host lists the other"

head -c $((3 << 20)) /dev/urandom >"$work/file"
id=$(on_a add "$work/file")
on_b get "$id" -o "$work/got" || fail "weft get on B failed: $(tail -n 20 "$work/b.log")"
cmp -s "$work/file" "$work/got" || fail "the file read on B differs from the one added on A"
say "weft add on A, weft get on B: the same 3 MiB"

say "ok in $(($(date +%s) - start)) s"
