#!/usr/bin/env bash
# Fetch Debian's linux-source-7.3 (trixie-backports), verify it, and unpack the tarball.
# Prints the path of the pristine source tree on stdout.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

PINNED_VERSION=7.3.4-1~bpo13+1
PINNED_SHA256=703e369ddd4cce971452f5a593ee55df3a5c10c83caf0fa0df039633ed181ee3
PACKAGE=linux-source-7.3

# The version to use: the pinned one while the archive has it, else the newest 7.3.x, loudly.
choose_version() {
    local versions
    versions=$(apt-cache madison "$PACKAGE" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}')
    if [ -z "$versions" ]; then
        bash "$(dirname "$0")/toolchain.sh" apt >&2
        versions=$(apt-cache madison "$PACKAGE" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}')
    fi
    [ -n "$versions" ] || die "$PACKAGE is not in any configured apt source; run 'bash images/scripts/toolchain.sh apt' and check that trixie-backports is reachable"
    if grep -qxF "$PINNED_VERSION" <<<"$versions"; then
        echo "$PINNED_VERSION"
        return
    fi
    local newest
    newest=$(sort -V <<<"$versions" | tail -n1)
    warn "$PACKAGE $PINNED_VERSION (pinned) is gone from the archive; using $newest instead."
    warn "Update PINNED_VERSION and PINNED_SHA256 in images/scripts/fetch-source.sh once $newest is verified."
    echo "$newest"
}

expected_sha256() {
    local version=$1
    if [ "$version" = "$PINNED_VERSION" ]; then
        echo "$PINNED_SHA256"
    else
        apt-cache show "$PACKAGE=$version" | awk '/^SHA256:/ {print $2; exit}'
    fi
}

pinned_dir="$CACHE_ROOT/source/${PINNED_VERSION//[~+:]/_}"
if [ -f "$pinned_dir/.unpacked" ]; then
    # The pinned source is here already: no need to ask the archive.
    version=$PINNED_VERSION
else
    version=$(choose_version)
fi
if [ "${1:-}" = "--version" ]; then
    echo "$version"
    exit 0
fi
src_dir="$CACHE_ROOT/source/${version//[~+:]/_}"
if [ -f "$src_dir/.unpacked" ]; then
    echo "$src_dir/linux"
    exit 0
fi

download_dir="$CACHE_ROOT/downloads"
mkdir -p "$download_dir"
deb=$(ls "$download_dir"/"${PACKAGE}_${version//:/%3a}"_all.deb 2>/dev/null || true)
if [ -z "$deb" ]; then
    log "downloading $PACKAGE $version (about 160 MiB)"
    (cd "$download_dir" && run_logged "apt-get download $PACKAGE=$version" "$CACHE_ROOT/logs/download.log" \
        apt-get download "$PACKAGE=$version")
    deb="$download_dir/${PACKAGE}_${version//:/%3a}_all.deb"
    [ -f "$deb" ] || die "apt-get download left no $deb (see $CACHE_ROOT/logs/download.log)"
fi
want=$(expected_sha256 "$version")
have=$(sha256sum "$deb" | awk '{print $1}')
if [ "$have" != "$want" ]; then
    mv "$deb" "$deb.bad"
    die "checksum mismatch for $deb: expected $want, got $have (moved aside to $deb.bad; rerun to download again)"
fi

log "unpacking $PACKAGE $version"
rm -rf "$src_dir" && mkdir -p "$src_dir/deb"
dpkg-deb -x "$deb" "$src_dir/deb"
tarball=$(find "$src_dir/deb/usr/src" -maxdepth 1 -name 'linux-source-*.tar.*' 2>/dev/null | head -n1)
[ -n "$tarball" ] || die "$deb holds no linux-source tarball under /usr/src"
mkdir -p "$src_dir/linux"
tar -xf "$tarball" -C "$src_dir/linux" --strip-components=1
rm -rf "$src_dir/deb"
[ -f "$src_dir/linux/Makefile" ] || die "unpacked $tarball has no top-level Makefile"
echo "$version" >"$src_dir/.unpacked"
echo "$src_dir/linux"
