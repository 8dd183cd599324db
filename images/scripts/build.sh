#!/usr/bin/env bash
# Build the guest images into a cache outside the repository, each output keyed by a
# hash of its inputs, so that a rebuild with nothing changed costs seconds.
#
#   build.sh all        toolchain, kernel, module, test kernel, guest programs, initramfs,
#                       the PostgreSQL image, the nested test host (its kernel and initramfs) and the QEMU every
#                       runner uses (qemu.sh)
#   build.sh paths      print `export KEY=PATH` lines for what `all` builds (builds nothing)
#   build.sh kernel | module | ktest | programs | initramfs | postgres | host | qemu
#                       one step (and what it needs); postgres: the PostgreSQL guest image
#                       (postgres.sh)
#   build.sh debug      the debug kernel (not in `all`): the nested host's kernel, with KASAN
#                       and lockdep, and the module linked in, for `make test-lockdep`
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/postgres.sh"

IMAGES="$REPO_ROOT/images"
KMOD_SRC="$REPO_ROOT/guest-kmod"
JOBS=${JOBS:-$(nproc)}
KMAKE=(make ARCH=x86_64 LLVM=-19)
# Built into the test kernel's command line: after its KUnit run it resets the machine, so
# any VMM (QEMU with -no-reboot, mshare-vmm) ends when the tests are done.
KTEST_CMDLINE="kunit_shutdown=reboot"
# Files of guest-kmod/ that make up the module (sources, the uapi header and its Rust
# generator, Kbuild, Makefile): what git tracks or would track, as it is in the work tree (a
# file deleted there is gone; files Kbuild generates are ignored, so never copied).
kmod_files() {
    (cd "$KMOD_SRC" && { git ls-files --cached --others --exclude-standard -- . 2>/dev/null || find . -type f; } |
        while read -r f; do [ -f "$f" ] && echo "$f"; done) | LC_ALL=C sort -u
}

hash_of() { sha256sum | cut -c1-16; }

# Kernel trees are 2 to 4 GB each and every key change makes one: each kind keeps the
# entries used most recently (a cache hit touches its .built) and removes the rest once a
# new one is built, so that a machine that rebuilds all day does not fill its disk.
CACHE_KEEP=${CACHE_KEEP:-3}
evict_old_entries() {
    local kind_dir=$1 entry
    ls -1t "$kind_dir"/*/.built 2>/dev/null | tail -n +$((CACHE_KEEP + 1)) | while read -r entry; do
        log "cache: removing $(dirname "$entry") (least recently used; CACHE_KEEP=$CACHE_KEEP)"
        rm -rf "$(dirname "$entry")"
    done
}

toolchain_id() {
    {
        clang-19 --version 2>/dev/null | head -n1
        rustc --version
        bindgen --version 2>/dev/null
    } | tr '\n' ';'
}

# The nested host kernel's own patches (KVM), applied on top of the guest kernel's.
host_patches_text() {
    local p
    for p in "$IMAGES"/kernel/host-patches/*.patch; do [ -e "$p" ] && { echo "host-patch=$(basename "$p")"; cat "$p"; }; done
    return 0
}

# Kernel: source version, config fragment, patches, toolchain, the make recipe.
kernel_key() {
    {
        echo "source=$SOURCE_VERSION"
        echo "recipe=${KMAKE[*]} tinyconfig+guest.config vmlinux bzImage modules, built at $WORK_TREE"
        echo "toolchain=$(toolchain_id)"
        cat "$IMAGES/kernel/guest.config"
        for p in "$IMAGES"/kernel/patches/*.patch; do [ -e "$p" ] && { echo "patch=$(basename "$p")"; cat "$p"; }; done
    } | hash_of
}
kmod_key() {
    { echo "kernel=$1"; kmod_files | while read -r f; do echo "file=$f"; cat "$KMOD_SRC/$f"; done; } | hash_of
}

compute_keys() {
    SOURCE_VERSION=$(bash "$IMAGES/scripts/fetch-source.sh" --version) ||
        die "cannot tell which linux-source-7.3 to build (see above)"
    KERNEL_KEY=$(kernel_key)
    KERNEL_DIR="$CACHE_ROOT/kernel/$KERNEL_KEY"
    KDIR="$KERNEL_DIR/linux"
    KMOD_KEY=$(kmod_key "$KERNEL_KEY")
    MODULE_DIR="$CACHE_ROOT/module/$KMOD_KEY"
    KTEST_DIR="$CACHE_ROOT/ktest/$(printf '%s\n' "$KMOD_KEY" "$KTEST_CMDLINE" | hash_of)"
    HOST_KERNEL_DIR="$CACHE_ROOT/host-kernel/$({ echo "kernel=$KERNEL_KEY"; cat "$IMAGES/kernel/host.config"; host_patches_text; } | hash_of)"
    DEBUG_KERNEL_DIR="$CACHE_ROOT/debug-kernel/$(printf '%s\n' "$KMOD_KEY" "$(basename "$HOST_KERNEL_DIR")" | hash_of)"
    PROGRAMS_DIR="$REPO_ROOT/target/guest/x86_64-unknown-linux-gnu/release"
}

# Every line of the fragment must survive olddefconfig; a dropped one means unmet dependencies.
check_config() {
    local config=$1 fragment=$2 bad=()
    local line name value
    while IFS= read -r line; do
        case "$line" in CONFIG_*=*) ;; *) continue ;; esac
        name=${line%%=*} value=${line#*=}
        if [ "$value" = n ]; then
            grep -q "^$name=" "$config" && bad+=("$line (got $(grep "^$name=" "$config"))")
        else
            grep -qxF "$line" "$config" || bad+=("$line (got: $(grep -E "^(# )?$name[= ]" "$config" || echo unset))")
        fi
    done <"$fragment"
    if [ ${#bad[@]} -gt 0 ]; then
        printf '  %s\n' "${bad[@]}" >&2
        die "$fragment: the options above did not survive olddefconfig (unmet Kconfig dependencies); fix the fragment"
    fi
}

# Kernel trees are always configured and built at one path, $WORK_TREE, then moved into the
# cache: Kbuild and the tools it builds (objtool) record absolute paths, and a tree built
# elsewhere would rebuild from scratch when the test kernel is made from a copy of it.
WORK_TREE="$CACHE_ROOT/work/linux"

# Runs "$@" with the work tree to itself (one kernel build at a time on this machine).
with_work_tree() {
    mkdir -p "$CACHE_ROOT/work"
    exec 9>"$CACHE_ROOT/work/lock"
    flock 9 || die "cannot lock $CACHE_ROOT/work/lock"
    rm -rf "$WORK_TREE"
    "$@"
    flock -u 9
}

build_kernel() {
    if [ -f "$KERNEL_DIR/.built" ]; then
        log "kernel $KERNEL_KEY: cached"
        touch "$KERNEL_DIR/.built"
        return
    fi
    with_work_tree build_kernel_in_work_tree
    evict_old_entries "$CACHE_ROOT/kernel"
}

build_kernel_in_work_tree() {
    local src
    src=$(bash "$IMAGES/scripts/fetch-source.sh")
    log "kernel $KERNEL_KEY: preparing the tree"
    rm -rf "$KERNEL_DIR" && mkdir -p "$KERNEL_DIR"
    cp -a "$src" "$WORK_TREE"
    local p
    for p in "$IMAGES"/kernel/patches/*.patch; do
        [ -e "$p" ] || continue
        log "applying $(basename "$p")"
        patch -d "$WORK_TREE" -p1 --batch --forward --quiet <"$p" >"$KERNEL_DIR/patch.log" 2>&1 ||
            { cat "$KERNEL_DIR/patch.log" >&2; die "$(basename "$p") does not apply to $(basename "$src") source"; }
    done
    local log_file="$KERNEL_DIR/build.log"
    (
        cd "$WORK_TREE"
        "${KMAKE[@]}" rustavailable >"$KERNEL_DIR/rustavailable.log" 2>&1 ||
            { cat "$KERNEL_DIR/rustavailable.log" >&2; die "the Rust toolchain cannot build this kernel (see above); rerun 'make toolchain'"; }
        run_logged "make tinyconfig" "$log_file" "${KMAKE[@]}" tinyconfig
        run_logged "merging guest.config" "$log_file" scripts/kconfig/merge_config.sh -m .config "$IMAGES/kernel/guest.config"
        run_logged "make olddefconfig" "$log_file" "${KMAKE[@]}" olddefconfig
        check_config .config "$IMAGES/kernel/guest.config"
        log "kernel $KERNEL_KEY: building (about 5 minutes on 2 cores; log: $log_file)"
        run_logged "the kernel build" "$log_file" "${KMAKE[@]}" -j"$JOBS" vmlinux bzImage modules
    )
    mv "$WORK_TREE" "$KDIR"
    touch "$KERNEL_DIR/.built"
}

# Refuse a kernel tree the module cannot be built against, with the reason.
check_kdir() {
    local kdir=$1 want have
    [ -f "$kdir/Module.symvers" ] && [ -f "$kdir/rust/libkernel.rmeta" ] ||
        die "$kdir is not a built Rust-enabled kernel tree (no Module.symvers or rust/libkernel.rmeta); run 'make images'"
    want=$(sed -n 's/^CONFIG_RUSTC_VERSION_TEXT="\(.*\)"/\1/p' "$kdir/.config")
    have=$(rustc --version)
    [ "$want" = "$have" ] ||
        die "$kdir was built with '$want' but rustc here is '$have': rebuild the kernel with 'make images'"
}

build_module() {
    if [ -f "$MODULE_DIR/mshare.ko" ]; then
        log "module $KMOD_KEY: cached"
        return
    fi
    check_kdir "$KDIR"
    log "module $KMOD_KEY: building mshare.ko"
    rm -rf "$MODULE_DIR" && mkdir -p "$MODULE_DIR/src"
    kmod_files | while read -r f; do mkdir -p "$MODULE_DIR/src/$(dirname "$f")"; cp "$KMOD_SRC/$f" "$MODULE_DIR/src/$f"; done
    run_logged "building mshare.ko" "$MODULE_DIR/build.log" make -C "$MODULE_DIR/src" KDIR="$KDIR"
    cp "$MODULE_DIR/src/mshare.ko" "$MODULE_DIR/mshare.ko"
}

# The test kernel: a copy of the built guest tree with the module linked in. Built at the
# same path as the guest tree was, Kbuild only rebuilds what the module adds: a relink,
# not a second kernel build.
build_ktest() {
    if [ -f "$KTEST_DIR/.built" ]; then
        log "test kernel $KMOD_KEY: cached"
        touch "$KTEST_DIR/.built"
        return
    fi
    with_work_tree build_ktest_in_work_tree
    evict_old_entries "$CACHE_ROOT/ktest"
}

# The module's sources into the work tree as drivers/mshare/, linked into the kernel.
add_module_to_work_tree() {
    mkdir -p "$WORK_TREE/drivers/mshare"
    kmod_files | while read -r f; do mkdir -p "$WORK_TREE/drivers/mshare/$(dirname "$f")"; cp "$KMOD_SRC/$f" "$WORK_TREE/drivers/mshare/$f"; done
    echo 'obj-y += mshare/' >>"$WORK_TREE/drivers/Makefile"
}

# Builds the work tree's vmlinux, which must have the module in it: $1 names the kernel
# in messages, $2 is the build log.
link_work_tree() {
    local what=$1 log_file=$2
    (cd "$WORK_TREE" && run_logged "the $what build" "$log_file" "${KMAKE[@]}" -j"$JOBS" vmlinux)
    grep -q ' __mshare_exit$' "$WORK_TREE/System.map" ||
        die "the $what has no mshare symbols: drivers/mshare was not linked in (see $log_file)"
}

build_ktest_in_work_tree() {
    log "test kernel $KMOD_KEY: copying the guest kernel tree"
    rm -rf "$KTEST_DIR" && mkdir -p "$KTEST_DIR"
    cp -a "$KDIR" "$WORK_TREE"
    add_module_to_work_tree
    (
        cd "$WORK_TREE"
        scripts/config --file .config --enable CMDLINE_BOOL --set-str CMDLINE "$KTEST_CMDLINE"
        run_logged "configuring the test kernel" "$KTEST_DIR/build.log" "${KMAKE[@]}" olddefconfig
        grep -qxF "CONFIG_CMDLINE=\"$KTEST_CMDLINE\"" .config || die "the test kernel's built-in command line did not stick"
    )
    log "test kernel $KMOD_KEY: linking the module in (log: $KTEST_DIR/build.log)"
    link_work_tree "test kernel" "$KTEST_DIR/build.log"
    mv "$WORK_TREE" "$KTEST_DIR/linux"
    touch "$KTEST_DIR/.built"
}

# The debug kernel: a copy of the nested host's tree (the guest kernel's configuration plus
# KASAN, lockdep and atomic-sleep checks) with the module linked in as for the test kernel.
# The module's own tests run on it as a guest (make test-lockdep): a lock-order or memory
# error of the module is then a report on the console, which fails the run.
build_debug_kernel() {
    if [ -f "$DEBUG_KERNEL_DIR/.built" ]; then
        log "debug kernel $(basename "$DEBUG_KERNEL_DIR"): cached"
        touch "$DEBUG_KERNEL_DIR/.built"
        return
    fi
    with_work_tree build_debug_kernel_in_work_tree
    evict_old_entries "$CACHE_ROOT/debug-kernel"
}

build_debug_kernel_in_work_tree() {
    log "debug kernel $(basename "$DEBUG_KERNEL_DIR"): copying the nested host's kernel tree"
    rm -rf "$DEBUG_KERNEL_DIR" && mkdir -p "$DEBUG_KERNEL_DIR"
    cp -a "$HOST_KERNEL_DIR/linux" "$WORK_TREE"
    add_module_to_work_tree
    log "debug kernel: linking the module in (about 4 minutes; log: $DEBUG_KERNEL_DIR/build.log)"
    link_work_tree "debug kernel" "$DEBUG_KERNEL_DIR/build.log"
    mv "$WORK_TREE" "$DEBUG_KERNEL_DIR/linux"
    touch "$DEBUG_KERNEL_DIR/.built"
}

# The nested test host's kernel: a copy of the built guest tree with host.config merged in
# (KVM_AMD) and host-patches/ applied (KVM's shared stage-2 tables, which the guest kernel
# has no use for). Built at the same path as the guest tree, Kbuild rebuilds what the new options
# touch; KVM selects PREEMPT_NOTIFIERS, which most of the kernel sees, so this is close to a
# whole kernel build (about 6 minutes on 2 cores).
build_host_kernel() {
    if [ -f "$HOST_KERNEL_DIR/.built" ]; then
        log "host kernel $(basename "$HOST_KERNEL_DIR"): cached"
        touch "$HOST_KERNEL_DIR/.built"
        return
    fi
    with_work_tree build_host_kernel_in_work_tree
    evict_old_entries "$CACHE_ROOT/host-kernel"
}

build_host_kernel_in_work_tree() {
    local log_file="$HOST_KERNEL_DIR/build.log"
    log "host kernel $(basename "$HOST_KERNEL_DIR"): copying the guest kernel tree"
    rm -rf "$HOST_KERNEL_DIR" && mkdir -p "$HOST_KERNEL_DIR"
    cp -a "$KDIR" "$WORK_TREE"
    local p
    for p in "$IMAGES"/kernel/host-patches/*.patch; do
        [ -e "$p" ] || continue
        log "applying $(basename "$p") (host kernel only)"
        patch -d "$WORK_TREE" -p1 --batch --forward --quiet <"$p" >"$HOST_KERNEL_DIR/patch.log" 2>&1 ||
            { cat "$HOST_KERNEL_DIR/patch.log" >&2; die "host patch $(basename "$p") does not apply to the guest kernel tree"; }
    done
    (
        cd "$WORK_TREE"
        run_logged "merging host.config" "$log_file" scripts/kconfig/merge_config.sh -m .config "$IMAGES/kernel/host.config"
        run_logged "make olddefconfig" "$log_file" "${KMAKE[@]}" olddefconfig
        check_config .config "$IMAGES/kernel/guest.config"
        check_config .config "$IMAGES/kernel/host.config"
        log "host kernel $(basename "$HOST_KERNEL_DIR"): building (about 6 minutes on 2 cores; log: $log_file)"
        run_logged "the host kernel build" "$log_file" "${KMAKE[@]}" -j"$JOBS" vmlinux
        grep -q ' svm_init$' System.map || die "the host kernel has no KVM_AMD (no svm_init in System.map; see $log_file)"
    )
    mv "$WORK_TREE" "$HOST_KERNEL_DIR/linux"
    touch "$HOST_KERNEL_DIR/.built"
}

# The guest programs (guest-tests' Rust programs, and its C programs written for the
# posted series, built against mshare-uapi/include), and for the nested test host
# mshare-vmm, the tiny-guest suite (vmm/tests/tiny_guests.rs, as
# $PROGRAMS_DIR/vmm-tiny-guests) and stage2-hostile-vmm (vmm/testing): static, so that
# they run on an initramfs with no C library.
build_programs() {
    log "guest programs and the nested host's mshare-vmm: cargo build (static, x86_64)"
    local static=(--release --locked --target x86_64-unknown-linux-gnu --target-dir target/guest)
    (
        cd "$REPO_ROOT"
        export RUSTFLAGS="-C target-feature=+crt-static"
        run_logged "building the guest programs" "$CACHE_ROOT/logs/programs.log" \
            cargo build "${static[@]}" -p guest-tests -p vmm -p vmm-testing --bins
        run_logged "building the tiny-guest suite" "$CACHE_ROOT/logs/programs.log" \
            cargo test "${static[@]}" -p vmm --test tiny_guests --no-run
        local suite
        suite=$(cargo test "${static[@]}" -p vmm --test tiny_guests --no-run --message-format=json 2>/dev/null |
            grep '"kind":\["test"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
        [ -x "$suite" ] || die "cargo printed no executable for the tiny-guest suite (see $CACHE_ROOT/logs/programs.log)"
        cp "$suite" "$PROGRAMS_DIR/vmm-tiny-guests"
        local c
        for c in guest-tests/c/*.c; do
            run_logged "building $c" "$CACHE_ROOT/logs/programs.log" \
                gcc -static -O2 -Wall -Wextra -Werror -std=gnu11 -I mshare-uapi/include \
                -o "$PROGRAMS_DIR/$(basename "$c" .c)" "$c"
        done
    )
}

# The guest programs guest-tests declares (stale binaries of removed ones are left out).
guest_programs() {
    local src
    for src in "$REPO_ROOT"/guest-tests/src/bin/*.rs "$REPO_ROOT"/guest-tests/c/*.c; do
        src=$(basename "$src")
        echo "$PROGRAMS_DIR/${src%.*}"
    done | LC_ALL=C sort
}

initramfs_key() {
    {
        echo "module=$KMOD_KEY"
        sha256sum "$IMAGES/initramfs/init" /bin/busybox
        guest_programs | xargs -r sha256sum
    } | hash_of
}

build_initramfs() {
    local key dir list
    key=$(initramfs_key)
    dir="$CACHE_ROOT/initramfs/$key"
    INITRAMFS="$dir/initramfs.cpio"
    if [ -f "$INITRAMFS" ]; then
        log "initramfs $key: cached"
        return
    fi
    local release vermagic
    release=$(cat "$KDIR/include/config/kernel.release")
    vermagic=$(modinfo -F vermagic "$MODULE_DIR/mshare.ko" | awk '{print $1}')
    [ "$vermagic" = "$release" ] ||
        die "mshare.ko was built for kernel $vermagic, the guest kernel is $release: rebuild with 'make images'"
    log "initramfs $key: assembling"
    guest_initramfs_lines | write_initramfs "$dir" "$INITRAMFS"
}

# The guest initramfs's lines after write_initramfs's own: the module and the programs.
guest_initramfs_lines() {
    local prog
    echo "file /lib/modules/mshare.ko $MODULE_DIR/mshare.ko 0644 0 0"
    guest_programs | while read -r prog; do echo "file /usr/bin/$(basename "$prog") $prog 0755 0 0"; done
}

# Writes an initramfs to $2, its file list in directory $1: busybox, /init, and the
# gen_init_cpio lines read from standard input.
write_initramfs() {
    local dir=$1 out=$2 list=$1/files.txt
    rm -rf "$dir" && mkdir -p "$dir"
    {
        local d
        for d in bin sbin dev proc sys tmp run etc lib lib/modules usr usr/bin root sys/fs; do echo "dir /$d 0755 0 0"; done
        echo "nod /dev/console 0600 0 0 c 5 1"
        echo "nod /dev/null 0666 0 0 c 1 3"
        echo "file /bin/busybox /bin/busybox 0755 0 0"
        echo "slink /bin/sh busybox 0777 0 0"
        echo "file /init $IMAGES/initramfs/init 0755 0 0"
        cat
    } >"$list"
    "$KDIR/usr/gen_init_cpio" "$list" >"$out.tmp" || die "gen_init_cpio failed on $list"
    mv "$out.tmp" "$out"
}

# The nested host's initramfs: /init and busybox as in the guest's, the static mshare-vmm,
# vmm-tiny-guests and stage2-hostile-vmm, and the guest image for it to boot under /l2
# (kernel, System.map, initramfs). The host loads no mshare.ko (its command line says
# mshare_module=skip).
host_initramfs_key() {
    {
        echo "guest-initramfs=$(initramfs_key)"
        echo "guest-kernel=$KERNEL_KEY"
        sha256sum "$IMAGES/initramfs/init" /bin/busybox "$PROGRAMS_DIR/mshare-vmm" "$PROGRAMS_DIR/vmm-tiny-guests" \
            "$PROGRAMS_DIR/stage2-hostile-vmm"
    } | hash_of
}

build_host_initramfs() {
    local key dir
    key=$(host_initramfs_key)
    dir="$CACHE_ROOT/host-initramfs/$key"
    HOST_INITRAMFS="$dir/initramfs.cpio"
    if [ -f "$HOST_INITRAMFS" ]; then
        log "host initramfs $key: cached"
        return
    fi
    log "host initramfs $key: assembling"
    {
        echo "file /usr/bin/mshare-vmm $PROGRAMS_DIR/mshare-vmm 0755 0 0"
        echo "file /usr/bin/vmm-tiny-guests $PROGRAMS_DIR/vmm-tiny-guests 0755 0 0"
        echo "file /usr/bin/stage2-hostile-vmm $PROGRAMS_DIR/stage2-hostile-vmm 0755 0 0"
        echo "dir /l2 0755 0 0"
        echo "file /l2/vmlinux $KDIR/vmlinux 0644 0 0"
        echo "file /l2/System.map $KDIR/System.map 0644 0 0"
        echo "file /l2/initramfs.cpio $INITRAMFS 0644 0 0"
    } | write_initramfs "$dir" "$HOST_INITRAMFS"
}

# The QEMU of every runner: Debian's source with the project's patches (qemu.sh).
build_qemu() {
    bash "$IMAGES/scripts/qemu.sh" build >/dev/null
}

print_paths() {
    local key
    key=$(initramfs_key 2>/dev/null) || key=missing
    local initramfs_dir="$CACHE_ROOT/initramfs/$key"
    local postgres_dir
    postgres_dir="$CACHE_ROOT/postgres-initramfs/$(postgres_key 2>/dev/null || echo missing)"
    local host_initramfs_dir
    host_initramfs_dir="$CACHE_ROOT/host-initramfs/$(host_initramfs_key 2>/dev/null || echo missing)"
    # `export` lines, so that `eval "$(make -s image-paths)"` hands them to the commands
    # typed after it (mshare-vmm reads ${VAR} in fleet files from its environment).
    sed 's/^/export /' <<EOF
VMLINUX=$KDIR/vmlinux
BZIMAGE=$KDIR/arch/x86/boot/bzImage
SYSTEM_MAP=$KDIR/System.map
INITRAMFS=$initramfs_dir/initramfs.cpio
POSTGRES_INITRAMFS=$postgres_dir/initramfs.cpio
KDIR=$KDIR
MODULE=$MODULE_DIR/mshare.ko
VMLINUX_KTEST=$KTEST_DIR/linux/vmlinux
SYSTEM_MAP_KTEST=$KTEST_DIR/linux/System.map
HOST_VMLINUX=$HOST_KERNEL_DIR/linux/vmlinux
HOST_INITRAMFS=$host_initramfs_dir/initramfs.cpio
VMLINUX_DEBUG=$DEBUG_KERNEL_DIR/linux/vmlinux
QEMU=$(bash "$IMAGES/scripts/qemu.sh" path)
EOF
}

step=${1:-all}
# The toolchain's versions are part of the kernel's key: install it before computing keys.
[ "$step" = paths ] || bash "$IMAGES/scripts/toolchain.sh"
compute_keys
case "$step" in
    paths) print_paths ;;
    kernel) build_kernel ;;
    module) build_kernel; build_module ;;
    ktest) build_kernel; build_ktest ;;
    programs) build_programs; build_dynamic_programs ;;
    initramfs) build_kernel; build_module; build_programs; build_initramfs ;;
    postgres) build_kernel; build_module; build_programs; build_initramfs; build_dynamic_programs; build_postgres_initramfs ;;
    host) build_kernel; build_module; build_programs; build_initramfs; build_host_kernel; build_host_initramfs ;;
    qemu) build_qemu ;;
    debug) build_kernel; build_host_kernel; build_debug_kernel ;;
    all)
        build_kernel
        build_module
        build_ktest
        build_programs
        build_initramfs
        build_dynamic_programs
        build_postgres_initramfs
        build_host_kernel
        build_host_initramfs
        build_qemu
        log "images ready:"
        print_paths >&2
        ;;
    *) die "unknown step '$step' (all, paths, kernel, module, ktest, programs, initramfs, postgres, host, qemu, debug)" ;;
esac
