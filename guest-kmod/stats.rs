// SPDX-License-Identifier: GPL-2.0

//! System-wide statistics and the mode, read from `/sys/fs/mshare/mshare_stats`
//! (world-readable, like /proc/meminfo): one `name value` line each.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kernel::{prelude::*, str::CString};

static SHARED_TABLES: AtomicBool = AtomicBool::new(false);
static REGIONS: AtomicU64 = AtomicU64::new(0);
static WINDOWS: AtomicU64 = AtomicU64::new(0);
static SHARED_WINDOWS: AtomicU64 = AtomicU64::new(0);
static TABLES: AtomicU64 = AtomicU64::new(0);
static TABLE_LINKS: AtomicU64 = AtomicU64::new(0);
static PMD_TABLES: AtomicU64 = AtomicU64::new(0);
static PMD_TABLE_LINKS: AtomicU64 = AtomicU64::new(0);
static FAULTS: AtomicU64 = AtomicU64::new(0);
static CHUNKS: AtomicU64 = AtomicU64::new(0);

/// Chooses the mode at load time: mode B (shared PTE tables) when the kernel can and the
/// `shared_tables` parameter allows it, else mode C (huge mappings per process).
pub(crate) fn set_shared_tables(enabled: bool) {
    SHARED_TABLES.store(enabled, Ordering::Relaxed);
}

/// Whether windows that can share tables do (mode B).
pub(crate) fn shared_tables() -> bool {
    SHARED_TABLES.load(Ordering::Relaxed)
}

/// The mode's name, as `mshare_stats` and the load message give it.
pub(crate) fn mode_name() -> &'static str {
    if shared_tables() {
        "B"
    } else {
        "C"
    }
}

fn add(counter: &AtomicU64, delta: i64) {
    if delta >= 0 {
        counter.fetch_add(delta as u64, Ordering::Relaxed);
    } else {
        counter.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
    }
}

pub(crate) fn region_made() {
    add(&REGIONS, 1);
}
pub(crate) fn region_dropped() {
    add(&REGIONS, -1);
}
pub(crate) fn window_opened(shared: bool) {
    add(&WINDOWS, 1);
    if shared {
        add(&SHARED_WINDOWS, 1);
    }
}
pub(crate) fn window_closed(shared: bool) {
    add(&WINDOWS, -1);
    if shared {
        add(&SHARED_WINDOWS, -1);
    }
}
pub(crate) fn table_made() {
    add(&TABLES, 1);
}
pub(crate) fn table_freed() {
    add(&TABLES, -1);
}
/// A table was linked into a process.
pub(crate) fn table_linked() {
    add(&TABLE_LINKS, 1);
}
pub(crate) fn pmd_table_made() {
    add(&PMD_TABLES, 1);
}
pub(crate) fn pmd_table_freed() {
    add(&PMD_TABLES, -1);
}
/// A PMD table was linked into a process.
pub(crate) fn pmd_table_linked() {
    add(&PMD_TABLE_LINKS, 1);
}
/// A granule's memory (a 2 MiB chunk) was allocated.
pub(crate) fn chunk_allocated() {
    add(&CHUNKS, 1);
}
/// A granule's memory was freed.
pub(crate) fn chunk_freed() {
    add(&CHUNKS, -1);
}
/// A fault mapped memory of a region into one process (mode C).
pub(crate) fn fault() {
    add(&FAULTS, 1);
}

/// The text of `mshare_stats`.
pub(crate) fn render() -> Result<CString> {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    CString::try_from_fmt(fmt!(
        "mode {}\nregions {}\nmemory_bytes {}\nwindows {}\nshared_windows {}\nshared_tables {}\nshared_table_bytes {}\ntable_links {}\nshared_pmd_tables {}\npmd_table_links {}\npfn_faults {}\n",
        mode_name(),
        load(&REGIONS),
        load(&CHUNKS) * crate::GRANULE_SIZE,
        load(&WINDOWS),
        load(&SHARED_WINDOWS),
        load(&TABLES),
        (load(&TABLES) + load(&PMD_TABLES)) * 4096,
        load(&TABLE_LINKS),
        load(&PMD_TABLES),
        load(&PMD_TABLE_LINKS),
        load(&FAULTS),
    ))
}
