#!/usr/bin/env bash
# Install the host toolchain the project needs, idempotently: Debian packages, the
# rust-src component, a pinned bindgen-cli, and for the VMM's fuzz targets a nightly
# toolchain with a pinned cargo-fuzz. A user never runs any of this by hand.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

BINDGEN_VERSION=0.72.1
CARGO_FUZZ_VERSION=0.13.2
# Packages from bookworm itself and from bookworm-backports (newer clang and QEMU);
# PostgreSQL for the guest image that runs it (images/scripts/postgres.sh).
BOOKWORM_PACKAGES="flex bison bc libelf-dev libssl-dev cpio busybox-static lz4 python3 make gcc g++ libc6-dev xz-utils kmod rsync fonts-dejavu-core curl patch ninja-build pkg-config libglib2.0-dev libpixman-1-dev libfdt-dev python3-venv postgresql-15 postgresql-client-15"
BACKPORTS_PACKAGES="clang-19 lld-19 llvm-19 libclang-19-dev qemu-system-x86"
BACKPORTS_COMMANDS="clang-19 ld.lld-19 llvm-ar-19 qemu-system-x86_64"

APT_SOURCES=/etc/apt/sources.list.d/mshare-vmm.sources
APT_PIN=/etc/apt/preferences.d/mshare-vmm

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# The Debian mirror this machine already uses (never a hard-coded host).
debian_mirror() {
    local uri
    uri=$(awk '
        /^URIs:/ { uris=$2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") { print uris; exit } }
        /^deb / && $3 == "bookworm" { print $2; exit }
    ' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -n1)
    [ -n "$uri" ] || die "no bookworm entry in /etc/apt/sources.list{,.d}: add the Debian archive your machine uses, then rerun"
    echo "$uri"
}

# bookworm-backports for clang-19 and QEMU; trixie-backports only for linux-source-7.3,
# pinned so that nothing else on the machine is ever installed or upgraded from it.
configure_apt() {
    local mirror want
    mirror=$(debian_mirror)
    want=$(cat <<EOS
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $mirror
Suites: trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOS
)
    local pin
    pin=$(cat <<EOS
# mshare-vmm: trixie-backports is only a source for linux-source-7.3 (fetched with apt-get download).
Package: *
Pin: release n=trixie-backports
Pin-Priority: -1
EOS
)
    if [ "$(cat "$APT_SOURCES" 2>/dev/null)" != "$want" ] || [ "$(cat "$APT_PIN" 2>/dev/null)" != "$pin" ]; then
        log "adding bookworm-backports and pinned trixie-backports from $mirror"
        printf '%s\n' "$want" | sudo_if_needed tee "$APT_SOURCES" >/dev/null
        printf '%s\n' "$pin" | sudo_if_needed tee "$APT_PIN" >/dev/null
        rm -f "$CACHE_ROOT/apt-updated"
    fi
    if [ ! -e "$CACHE_ROOT/apt-updated" ] || [ -n "$(find "$CACHE_ROOT/apt-updated" -mmin +1440)" ]; then
        log "apt-get update"
        run_logged "apt-get update" "$CACHE_ROOT/logs/apt-update.log" sudo_if_needed apt-get update
        mkdir -p "$CACHE_ROOT" && touch "$CACHE_ROOT/apt-updated"
    fi
}

missing_packages() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"
    done
}

install_packages() {
    local missing
    missing=$(missing_packages $BOOKWORM_PACKAGES $BACKPORTS_PACKAGES | xargs)
    [ -z "$missing" ] && return 0
    configure_apt
    log "installing Debian packages: $missing"
    export DEBIAN_FRONTEND=noninteractive
    run_logged "apt-get install (bookworm)" "$CACHE_ROOT/logs/apt-install.log" \
        sudo_if_needed apt-get install -y --no-install-recommends $BOOKWORM_PACKAGES
    run_logged "apt-get install (bookworm-backports)" "$CACHE_ROOT/logs/apt-install-bpo.log" \
        sudo_if_needed apt-get install -y --no-install-recommends -t bookworm-backports $BACKPORTS_PACKAGES
    local c
    for c in $BACKPORTS_COMMANDS; do
        command -v "$c" >/dev/null || die "$c missing after installing $BACKPORTS_PACKAGES; see $CACHE_ROOT/logs/apt-install-bpo.log"
    done
}

install_rust_parts() {
    if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
        log "rustup component add rust-src"
        run_logged "rustup component add rust-src" "$CACHE_ROOT/logs/rustup.log" rustup component add rust-src
    fi
    local have
    have=$(bindgen --version 2>/dev/null | awk '{print $2}' || true)
    if [ "$have" != "$BINDGEN_VERSION" ]; then
        log "cargo install bindgen-cli $BINDGEN_VERSION (was: ${have:-none}; takes about 2 minutes)"
        run_logged "cargo install bindgen-cli" "$CACHE_ROOT/logs/bindgen.log" \
            cargo install --locked --force bindgen-cli --version "$BINDGEN_VERSION"
    fi
    # cargo-fuzz builds with sanitizers, which only nightly has.
    if ! rustup run nightly rustc --version >/dev/null 2>&1; then
        log "rustup toolchain install nightly (minimal; for cargo-fuzz)"
        run_logged "rustup toolchain install nightly" "$CACHE_ROOT/logs/rustup.log" \
            rustup toolchain install nightly --profile minimal
    fi
    have=$(cargo fuzz --version 2>/dev/null | awk '{print $2}' || true)
    if [ "$have" != "$CARGO_FUZZ_VERSION" ]; then
        log "cargo install cargo-fuzz $CARGO_FUZZ_VERSION (was: ${have:-none}; about 30 seconds)"
        run_logged "cargo install cargo-fuzz" "$CACHE_ROOT/logs/cargo-fuzz.log" \
            cargo install --locked --force cargo-fuzz --version "$CARGO_FUZZ_VERSION"
    fi
}

case "${1:-all}" in
    apt) configure_apt ;;
    all) install_packages; install_rust_parts ;;
    *) die "usage: $0 [all|apt]" ;;
esac
