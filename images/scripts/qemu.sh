#!/usr/bin/env bash
# The QEMU every runner uses: Debian's qemu source package (the newest this machine's
# mirror carries), x86_64 system emulation only, with Debian's patches and then the
# project's own (images/qemu/patches/, fixes to the emulated SVM the nested host runs
# on), built into the cache keyed by source, patches and recipe.
#
#   qemu.sh build   fetch and verify the source, build it (cached); print the binary's path
#   qemu.sh path    print where the binary is for the current key (builds nothing)
#
# Firmware (SeaBIOS, qboot, the option ROMs) comes from Debian's seabios and
# qemu-system-data packages, which the toolchain installs with Debian's own QEMU.
#
# `make images` runs `qemu.sh build` (build.sh's last step), `make -s image-paths` prints the
# binary as QEMU=, and guest_runner::qemu::qemu_binary() runs it unless QEMU is set. The
# toolchain installs the build's dependencies (ninja-build, glib, pixman, libfdt, python3-venv).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# sid's qemu: trixie-backports lists 11.1.x but the mirror does not carry its files.
QEMU_VERSION=10.2.2+ds-1
QEMU_UPSTREAM=10.2.2+ds
ORIG_SHA256=be05230fe47a6937cd29f28f562932c8125f9c93c2a82c625198f7a4aa601dfb
DEBIAN_SHA256=ddf75aceab4f8f77374f3cb34fc97b41514895aeb293ce8b2ddd5e072bb0f5c0
MESON_VERSION=1.9.0
PATCHES="$REPO_ROOT/images/qemu/patches"
# Only what the runners use: x86_64 system emulation with TCG (and KVM, for the boot
# benchmark's QEMU on the host's KVM); no tools, docs, GUI, network back ends or Rust.
CONFIGURE=(--target-list=x86_64-softmmu --without-default-features --enable-tcg --enable-kvm --enable-fdt=system
    --disable-docs --disable-tools --disable-rust --disable-werror --disable-download
    --disable-install-blobs --firmwarepath=/usr/share/qemu:/usr/share/seabios)

hash_of() { sha256sum | cut -c1-16; }

qemu_key() {
    {
        echo "source=$QEMU_VERSION orig=$ORIG_SHA256 debian=$DEBIAN_SHA256 meson=$MESON_VERSION"
        echo "configure=${CONFIGURE[*]}"
        gcc --version | head -n1
        local p
        for p in "$PATCHES"/*.patch; do [ -e "$p" ] && { echo "patch=$(basename "$p")"; cat "$p"; }; done
        return 0
    } | hash_of
}

QEMU_DIR="$CACHE_ROOT/qemu/$(qemu_key)"
QEMU_BIN="$QEMU_DIR/install/bin/qemu-system-x86_64"

# The mirror this machine's apt uses for bookworm (the toolchain script's rule).
mirror() {
    awk '
        /^URIs:/ { uris=$2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") { print uris; exit } }
        /^deb / && $3 == "bookworm" { print $2; exit }
    ' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -n1
}

# Downloads pool/main/q/qemu/$1 into the cache unless there already, checks its sha256.
fetch() {
    local file=$1 want=$2 dir="$CACHE_ROOT/downloads" base
    mkdir -p "$dir"
    if [ ! -f "$dir/$file" ]; then
        base=$(mirror)
        [ -n "$base" ] || die "no bookworm entry in /etc/apt/sources.list{,.d}: cannot tell which Debian mirror to fetch $file from"
        log "downloading $file from $base"
        curl -fsS --retry 3 -o "$dir/$file.part" "$base/pool/main/q/qemu/${file//+/%2B}" ||
            die "cannot download $base/pool/main/q/qemu/$file: if the mirror dropped qemu $QEMU_VERSION, update QEMU_VERSION and the checksums in $0 from its Sources index"
        mv "$dir/$file.part" "$dir/$file"
    fi
    local have
    have=$(sha256sum "$dir/$file" | awk '{print $1}')
    if [ "$have" != "$want" ]; then
        mv "$dir/$file" "$dir/$file.bad"
        die "checksum mismatch for $file: expected $want, got $have (moved aside to $file.bad)"
    fi
    echo "$dir/$file"
}

# meson (QEMU wants a newer one than bookworm's) in a venv of the cache.
meson_venv() {
    local venv="$CACHE_ROOT/qemu/venv-meson-$MESON_VERSION"
    if [ ! -x "$venv/bin/meson" ]; then
        log "meson $MESON_VERSION into $venv (pip)"
        rm -rf "$venv"
        run_logged "creating $venv" "$CACHE_ROOT/logs/qemu-venv.log" /usr/bin/python3 -m venv "$venv"
        run_logged "pip install meson==$MESON_VERSION" "$CACHE_ROOT/logs/qemu-venv.log" \
            "$venv/bin/pip" install --quiet "meson==$MESON_VERSION"
    fi
    echo "$venv"
}

build() {
    if [ -x "$QEMU_BIN" ] && [ -f "$QEMU_DIR/.built" ]; then
        log "qemu $(basename "$QEMU_DIR"): cached"
        echo "$QEMU_BIN"
        return
    fi
    local orig debian venv src="$QEMU_DIR/src" build="$QEMU_DIR/build" log_file="$QEMU_DIR/build.log"
    orig=$(fetch "qemu_$QEMU_UPSTREAM.orig.tar.xz" "$ORIG_SHA256")
    debian=$(fetch "qemu_$QEMU_VERSION.debian.tar.xz" "$DEBIAN_SHA256")
    venv=$(meson_venv)
    rm -rf "$QEMU_DIR" && mkdir -p "$src" "$build"
    log "qemu $(basename "$QEMU_DIR"): unpacking $QEMU_VERSION"
    tar -xf "$orig" -C "$src" --strip-components=1
    tar -xf "$debian" -C "$src"
    local p
    while read -r p; do
        case "$p" in '' | '#'*) continue ;; esac
        patch -d "$src" -p1 --batch --forward --quiet <"$src/debian/patches/$p" >>"$QEMU_DIR/patch.log" 2>&1 ||
            { cat "$QEMU_DIR/patch.log" >&2; die "Debian's $p does not apply"; }
    done <"$src/debian/patches/series"
    for p in "$PATCHES"/*.patch; do
        [ -e "$p" ] || continue
        log "applying $(basename "$p")"
        patch -d "$src" -p1 --batch --forward --quiet <"$p" >>"$QEMU_DIR/patch.log" 2>&1 ||
            { cat "$QEMU_DIR/patch.log" >&2; die "$(basename "$p") does not apply to qemu $QEMU_VERSION"; }
    done
    log "qemu $(basename "$QEMU_DIR"): building x86_64-softmmu (about 5 minutes on 2 cores; log: $log_file)"
    (
        cd "$build"
        run_logged "configuring qemu" "$log_file" "$src/configure" --python="$venv/bin/python3" \
            --prefix="$QEMU_DIR/install" "${CONFIGURE[@]}"
        run_logged "building qemu" "$log_file" ninja -j"${JOBS:-$(nproc)}"
        run_logged "installing qemu" "$log_file" ninja install
    )
    "$QEMU_BIN" --version >>"$log_file" 2>&1 || die "the built $QEMU_BIN does not run (see $log_file)"
    rm -rf "$src" "$build"
    touch "$QEMU_DIR/.built"
    echo "$QEMU_BIN"
}

case "${1:-build}" in
    build) build ;;
    path) echo "$QEMU_BIN" ;;
    *) die "usage: $0 [build|path]" ;;
esac
