# The PostgreSQL guest image, sourced by build.sh: the guest initramfs (module, programs)
# plus what runs unmodified programs on mshare and PostgreSQL itself:
#
# - the C library and every shared library the programs below load (ldd's closure);
# - the preload library (guest-preload) at mshare_uapi::preload::LIBRARY_PATH, and its
#   C test programs (guest-preload/c), built against this C library;
# - Debian's PostgreSQL 15 server, pgbench and psql, with the extensions the benchmark
#   uses (pg_prewarm, pg_buffercache) and the share/ tree;
# - a cluster made at build time (initdb, then pgbench -i at PG_SCALE), owned by the
#   guest's postgres user (images/postgres/passwd), with images/postgres/postgresql.conf.
#
# Its own initramfs, so that the default image stays small (this one is about 120 MB).
# shellcheck shell=bash

PG_BIN=/usr/lib/postgresql/15/bin
PG_LIB=/usr/lib/postgresql/15/lib
PG_SHARE=/usr/share/postgresql/15
PG_PROGRAMS="postgres pg_ctl pgbench psql pg_isready"
PG_MODULES="plpgsql pg_prewarm pg_buffercache"
# The guest's postgres user and where its cluster is.
PG_GUEST_UID=1000
PG_GUEST_DATA=/var/lib/postgresql/data
# pgbench's scale for the cluster in the image: 1 is 100,000 accounts, 16 MB.
PG_SCALE=1
PRELOAD_LIBRARY=/usr/lib/mshare/libmshare_preload.so
DYNAMIC_DIR="$REPO_ROOT/target/guest-dynamic/x86_64-unknown-linux-gnu/release"

# The preload library and its C test programs: dynamically linked, unlike the guest
# programs, since LD_PRELOAD is the dynamic loader's.
build_dynamic_programs() {
    log "the preload library and its C test programs (dynamic, x86_64)"
    (
        cd "$REPO_ROOT"
        run_logged "building the preload library" "$CACHE_ROOT/logs/programs.log" \
            env -u RUSTFLAGS cargo build --release --locked --target x86_64-unknown-linux-gnu \
            --target-dir target/guest-dynamic -p mshare-preload
        mkdir -p "$DYNAMIC_DIR/c"
        local c
        for c in guest-preload/c/*.c; do
            run_logged "building $c" "$CACHE_ROOT/logs/programs.log" \
                gcc -O2 -Wall -Wextra -Werror -std=gnu11 -pthread -o "$DYNAMIC_DIR/c/$(basename "$c" .c)" "$c"
        done
    )
}

postgres_key() {
    {
        echo "initramfs=$(initramfs_key)"
        dpkg-query -W -f='${Package} ${Version}\n' postgresql-15 libc6
        sha256sum "$DYNAMIC_DIR/libmshare_preload.so" "$DYNAMIC_DIR"/c/* "$IMAGES"/postgres/* "$IMAGES/scripts/postgres.sh"
    } | hash_of
}

# Makes the cluster in a scratch directory (the host's postgres user cannot reach the
# cache under root's home) and prints its path.
make_cluster() {
    id postgres >/dev/null 2>&1 || die "no postgres user on this machine: install postgresql-15 (make toolchain)"
    local scratch log="$CACHE_ROOT/logs/postgres-cluster.log"
    scratch=$(mktemp -d /tmp/mshare-postgres.XXXXXX)
    chmod 755 "$scratch"
    install -d -o postgres -g postgres -m 700 "$scratch/data"
    install -d -o postgres -g postgres -m 755 "$scratch/run"
    : >"$log"
    local as_postgres=(runuser -u postgres --)
    (
        cd /
        run_logged "initdb" "$log" "${as_postgres[@]}" "$PG_BIN/initdb" -D "$scratch/data" --no-locale -E UTF8 \
            --auth=trust -U postgres --wal-segsize=1 -N
        cat "$IMAGES/postgres/postgresql.conf" >>"$scratch/data/postgresql.conf"
        run_logged "starting PostgreSQL on the host to fill the cluster" "$log" "${as_postgres[@]}" "$PG_BIN/pg_ctl" \
            -D "$scratch/data" -o "-k $scratch/run -c unix_socket_directories=$scratch/run" -w -l "$scratch/run/server.log" start
        # The server is stopped whatever happens next.
        trap '"${as_postgres[@]}" "$PG_BIN/pg_ctl" -D "$scratch/data" -m immediate -w stop >/dev/null 2>&1 || true' EXIT
        run_logged "pgbench -i -s $PG_SCALE" "$log" "${as_postgres[@]}" "$PG_BIN/pgbench" -i -s "$PG_SCALE" \
            -h "$scratch/run" -U postgres postgres
        run_logged "creating the extensions" "$log" "${as_postgres[@]}" "$PG_BIN/psql" -v ON_ERROR_STOP=1 \
            -h "$scratch/run" -U postgres -d postgres \
            -c "CREATE EXTENSION pg_prewarm" -c "CREATE EXTENSION pg_buffercache" -c CHECKPOINT
        run_logged "stopping the host's PostgreSQL" "$log" "${as_postgres[@]}" "$PG_BIN/pg_ctl" -D "$scratch/data" \
            -m fast -w stop
        trap - EXIT
    ) || { rm -rf "$scratch"; exit 1; }
    rm -f "$scratch/data/postmaster.opts"
    echo "$scratch"
}

# gen_init_cpio lines: a directory line for each ancestor of a guest path not yet given
# (write_initramfs gives the top-level ones).
declare -A PG_DIRS=()
ancestors() {
    local path=$1 dir="" part
    local IFS=/
    for part in ${path%/*}; do
        [ -n "$part" ] || continue
        dir="$dir/$part"
        case "$dir" in /bin | /sbin | /dev | /proc | /sys | /tmp | /run | /etc | /lib | /lib/modules | /usr | /usr/bin | /root | /sys/fs) continue ;; esac
        [ -n "${PG_DIRS[$dir]:-}" ] && continue
        PG_DIRS[$dir]=1
        echo "dir $dir 0755 0 0"
    done
}

# A host file at the same path in the guest (symbolic links resolved).
host_file() {
    ancestors "$1"
    echo "file $1 $(readlink -f "$1") 0755 0 0"
}

# The shared libraries the ELF files given load (ldd), loader included, once each.
library_closure() {
    local elf
    for elf in "$@"; do
        ldd "$elf" | sed -n 's|.*=> \(/[^ ]*\) .*|\1|p; s|^[[:space:]]*\(/[^ ]*\) (.*|\1|p'
    done | LC_ALL=C sort -u
}

# The image's lines after the guest initramfs's. Loops read from process substitutions, not
# pipes, so that ancestors() remembers the directories it gave.
postgres_lines() {
    local cluster=$1 elfs=() f mode guest
    echo "file /etc/passwd $IMAGES/postgres/passwd 0644 0 0"
    echo "file /etc/group $IMAGES/postgres/group 0644 0 0"
    for f in $PG_PROGRAMS; do elfs+=("$PG_BIN/$f"); done
    for f in $PG_MODULES; do elfs+=("$PG_LIB/$f.so"); done
    for f in "${elfs[@]}"; do host_file "$f"; done
    ancestors "$PRELOAD_LIBRARY"
    echo "file $PRELOAD_LIBRARY $DYNAMIC_DIR/libmshare_preload.so 0755 0 0"
    for f in "$DYNAMIC_DIR"/c/*; do echo "file /usr/bin/$(basename "$f") $f 0755 0 0"; done
    while read -r f; do
        host_file "$f"
    done < <(library_closure "${elfs[@]}" "$DYNAMIC_DIR/libmshare_preload.so" "$DYNAMIC_DIR"/c/*)
    # share/ (extensions' scripts, time zone sets, the catalogs' descriptions), and UTC.
    ancestors "$PG_SHARE/"
    while read -r f; do
        if [ -L "$f" ]; then
            echo "slink $f $(readlink "$f") 0777 0 0"
        elif [ -d "$f" ]; then
            echo "dir $f 0755 0 0"
        else
            echo "file $f $f 0644 0 0"
        fi
    done < <(find "$PG_SHARE" -mindepth 1 | LC_ALL=C sort)
    ancestors /usr/share/zoneinfo/Etc/UTC
    echo "file /usr/share/zoneinfo/Etc/UTC $(readlink -f /usr/share/zoneinfo/Etc/UTC) 0644 0 0"
    echo "slink /usr/share/zoneinfo/UTC Etc/UTC 0777 0 0"
    # The cluster, the guest's postgres user's (its socket directory is made at boot, in /run).
    ancestors /var/lib/postgresql
    echo "dir /var/lib/postgresql 0755 $PG_GUEST_UID $PG_GUEST_UID"
    while read -r f; do
        guest="$PG_GUEST_DATA/${f#./}"
        guest=${guest%/.}
        mode=$(stat -c %a "$cluster/data/$f")
        if [ -d "$cluster/data/$f" ]; then
            echo "dir $guest $mode $PG_GUEST_UID $PG_GUEST_UID"
        else
            echo "file $guest $cluster/data/$f $mode $PG_GUEST_UID $PG_GUEST_UID"
        fi
    done < <(cd "$cluster/data" && find . | LC_ALL=C sort)
}

build_postgres_initramfs() {
    local key dir cluster
    key=$(postgres_key)
    dir="$CACHE_ROOT/postgres-initramfs/$key"
    POSTGRES_INITRAMFS="$dir/initramfs.cpio"
    if [ -f "$POSTGRES_INITRAMFS" ]; then
        log "PostgreSQL initramfs $key: cached"
        return
    fi
    log "PostgreSQL initramfs $key: making the cluster (pgbench scale $PG_SCALE) and assembling"
    cluster=$(make_cluster)
    { guest_initramfs_lines; postgres_lines "$cluster"; } | write_initramfs "$dir" "$POSTGRES_INITRAMFS"
    rm -rf "$cluster"
}
