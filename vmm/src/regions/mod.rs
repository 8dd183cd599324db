//! Shared memory regions: host memory mapped once into the VMM and exposed to guests as the
//! BAR2 of an ivshmem-compatible PCI device, in every VM that attaches it.
//!
//! A region is backed by a memfd (lives as long as the VMM), a hugetlb memfd (2 MiB or
//! 1 GiB pages; no mount needed), or a file at a path (any mmap-able file; the contents
//! outlive the VMs). The mapping is `MAP_SHARED`, so every memslot pointing at it, in any VM
//! of this process, sees the same host pages through the same host page tables.
//!
//! [`spec`]: what a user writes (a `--region` flag, a fleet file's `[[region]]`) and its
//! checks; [`mapping`]: the backing made or opened and mapped into this process.

mod mapping;
mod spec;

pub use mapping::{MapError, SharedRegion};
pub use spec::{
    backing_from, free_huge_pages, Attachment, Backing, RegionError, RegionFields, RegionSpec, Stage2, MIN_REGION_SIZE,
};
