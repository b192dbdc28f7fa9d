#!/usr/bin/env bash
# Builds a small OCI image-layout archive without Docker, for the container
# tests and the examples: busybox-static in a root folder, with the usual
# commands as busybox links inside the layer (symbolic links, one absolute
# link, one hard link, one dangling link), a second layer that adds a file
# and whites one out, sha256 digests throughout, and a config whose Cmd
# prints a greeting. Deterministic: the same busybox gives the same bytes.
# Usage: scripts/build-test-image.sh OUT.tar
set -euo pipefail
out=${1:?usage: scripts/build-test-image.sh OUT.tar}

if ! dpkg -s busybox-static >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "build-test-image: busybox-static is missing; run scripts/install-deps.sh as root" >&2
    exit 1
  fi
  echo "build-test-image: installing busybox-static" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >&2
fi
busybox=$(dpkg -L busybox-static | grep -E '/busybox$' | head -n 1)
[ -x "$busybox" ] || { echo "build-test-image: no busybox binary in busybox-static" >&2; exit 1; }

mkdir -p "$(dirname "$out")"
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
python3 - "$busybox" "$tmp" <<'PY'
import gzip, hashlib, io, json, sys, tarfile

busybox_path, out = sys.argv[1], sys.argv[2]
busybox = open(busybox_path, "rb").read()

def info(name, kind=tarfile.REGTYPE, mode=0o644, size=0, link=""):
    t = tarfile.TarInfo(name)
    t.type, t.mode, t.size, t.linkname = kind, mode, size, link
    t.mtime, t.uid, t.gid, t.uname, t.gname = 0, 0, 0, "root", "root"
    return t

def file(name, data, mode=0o644):
    return (info(name, mode=mode, size=len(data)), data)

def layer(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for t, data in entries:
            tar.addfile(t, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()

applets = ["sh", "ls", "cat", "echo", "sleep", "nc", "wget", "env", "mkdir", "touch",
           "id", "rm", "wc", "head", "grep", "sed", "test", "ip", "unshare", "ps", "uname"]
base = [
    (info("bin/", tarfile.DIRTYPE, 0o755), None),
    file("bin/busybox", busybox, 0o755),
]
base += [(info(f"bin/{a}", tarfile.SYMTYPE, 0o777, link="busybox"), None) for a in applets]
base += [
    (info("bin/true", tarfile.LNKTYPE, 0o755, link="bin/busybox"), None),
    (info("usr/", tarfile.DIRTYPE, 0o755), None),
    (info("usr/bin/", tarfile.DIRTYPE, 0o755), None),
    (info("usr/bin/env", tarfile.SYMTYPE, 0o777, link="/bin/busybox"), None),
    (info("etc/", tarfile.DIRTYPE, 0o755), None),
    file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
    file("etc/group", b"root:x:0:\n"),
    file("etc/motd", b"hello\n"),
    (info("etc/mtab", tarfile.SYMTYPE, 0o777, link="/proc/self/mounts"), None),
    (info("root/", tarfile.DIRTYPE, 0o700), None),
    (info("tmp/", tarfile.DIRTYPE, 0o1777), None),
]
top = [
    file("etc/weft-release", b"weft busybox test image\n"),
    (info("etc/.wh.motd"), b""),
]
layers = [layer(base), layer(top)]

def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()

gz = io.BytesIO()
with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as g:
    g.write(layers[0])
blobs = {}
layer_descs = []
for plain, blob, media in [
    (layers[0], gz.getvalue(), "application/vnd.oci.image.layer.v1.tar+gzip"),
    (layers[1], layers[1], "application/vnd.oci.image.layer.v1.tar"),
]:
    blobs[sha(blob)] = blob
    layer_descs.append({"mediaType": media, "digest": sha(blob), "size": len(blob)})

config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
               "Cmd": ["sh", "-c", "echo hello from busybox"], "WorkingDir": "/"},
    "rootfs": {"type": "layers", "diff_ids": [sha(l) for l in layers]},
    "history": [{"created_by": "scripts/build-test-image.sh"}],
}, sort_keys=True, separators=(",", ":")).encode()
blobs[sha(config)] = config
manifest = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": sha(config), "size": len(config)},
    "layers": layer_descs,
}, sort_keys=True, separators=(",", ":")).encode()
blobs[sha(manifest)] = manifest
index = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "digest": sha(manifest), "size": len(manifest),
                   "annotations": {"org.opencontainers.image.ref.name": "busybox:test"}}],
}, sort_keys=True, separators=(",", ":")).encode()

with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as tar:
    def add(name, data):
        tar.addfile(info(name, size=len(data)), io.BytesIO(data))
    add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    for d in ["blobs/", "blobs/sha256/"]:
        tar.addfile(info(d, tarfile.DIRTYPE, 0o755))
    for digest in sorted(blobs):
        add("blobs/sha256/" + digest.split(":")[1], blobs[digest])
    add("index.json", index)
PY
mv "$tmp" "$out"
trap - EXIT
echo "$out"
