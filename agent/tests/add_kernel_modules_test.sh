#!/usr/bin/env bash
# agent/initramfs/add-kernel-modules on a fake kernel tree: the dependency
# closure in load order (dependencies first), built-in dependencies skipped,
# a missing module refused, and the appended archive's list and files.
#   add_kernel_modules_test.sh SCRIPT AGENT_INITRAMFS BUSYBOX
set -euo pipefail
script="$1" initramfs="$2" busybox="$3"
t="$(mktemp -d)"
trap 'rm -rf "$t"' EXIT
rel=9.9.9-test
m="$t/root/lib/modules/$rel"
mkdir -p "$m/kernel/a" "$m/kernel/b"
mod() {  # path depends
  printf 'ELF\0name=%s\0depends=%s\0' "$(basename "$1" .ko)" "$2" > "$m/kernel/$1"
}
mod a/virtio_ring.ko ""
mod a/virtio.ko "virtio_ring"
mod a/virtio_mmio.ko "virtio,virtio_ring"
mod b/vsock.ko ""
mod b/vmw_vsock_virtio_transport_common.ko "vsock,virtio,virtio_ring"
mod b/vmw_vsock_virtio_transport.ko "vmw_vsock_virtio_transport_common,virtio,vsock,virtio_ring"
mod b/virtio-rng.ko "virtio,rng_core"
mod b/uses_missing.ko "not_there"
echo "kernel/drivers/char/hw_random/rng-core.ko" > "$m/modules.builtin"

fail() { echo "FAIL: $*"; exit 1; }
"$script" --kernel-root "$t/root" --release "$rel" --initramfs "$initramfs" --out "$t/out.gz" \
  --module virtio_mmio --module virtio_rng --module vmw_vsock_virtio_transport

# The agent initramfs unchanged, then a second gzip'd archive with the
# modules (the kernel unpacks concatenated archives in order).
n=$(stat -c %s "$initramfs")
head -c "$n" "$t/out.gz" | cmp -s - "$initramfs" || fail "the agent initramfs is not first, unchanged"
mkdir "$t/x"
(cd "$t/x" && tail -c +$((n + 1)) "$t/out.gz" | gzip -dc | "$busybox" cpio -i -d)
want="/lib/modules/$rel/kernel/a/virtio_ring.ko
/lib/modules/$rel/kernel/a/virtio.ko
/lib/modules/$rel/kernel/a/virtio_mmio.ko
/lib/modules/$rel/kernel/b/virtio-rng.ko
/lib/modules/$rel/kernel/b/vsock.ko
/lib/modules/$rel/kernel/b/vmw_vsock_virtio_transport_common.ko
/lib/modules/$rel/kernel/b/vmw_vsock_virtio_transport.ko"
got="$(cat "$t/x/lib/modules/forkd.load")"
[ "$got" = "$want" ] || fail "load order: got
$got"
for f in $want; do cmp -s "$t/x$f" "$m/${f#/lib/modules/$rel/}" || fail "$f not copied"; done
[ ! -e "$t/x/lib/modules/$rel/kernel/b/uses_missing.ko" ] || fail "unrequested module copied"

# A dependency the kernel has neither as a module nor built in is refused.
if "$script" --kernel-root "$t/root" --release "$rel" --initramfs "$initramfs" \
     --out "$t/bad.gz" --module uses_missing 2>"$t/err"; then
  fail "a missing dependency was accepted"
fi
grep -q "not_there" "$t/err" || fail "the error does not name the missing module: $(cat "$t/err")"
echo "PASS add-kernel-modules"
