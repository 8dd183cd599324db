// SPDX-License-Identifier: GPL-2.0
/*
 * Windows: how a process's mapping of a region is served, one family of vm_operations per
 * kind (mode C over device memory or over a region's own pages, mode B through shared PTE
 * or PMD tables). Rust decides every fault's outcome (msharefs.rs, region.rs); the
 * functions here only call the core's mapping primitives Rust cannot reach.
 */
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/huge_mm.h>
#include <linux/pagemap.h>

#include "glue.h"
#include "msharefs.h"

/* Removes [offset, offset + len) of the region from every process that maps it. */
void msharefs_zap(struct inode *inode, loff_t offset, loff_t len)
{
	unmap_mapping_range(inode->i_mapping, offset, len, 1);
}

/*
 * Mapping without the core-mm patch ("mode C"): each granule of the window is one PMD
 * leaf pointing at its chunk, so a process pays no PTE table for it, but every process
 * takes its own faults. The window's bounds and alignment are checked in Rust, and Rust
 * looks each fault's page up (mshare_region_fault(): SIGSEGV for a hole, SIGBUS past the
 * end) and calls one of the three below to map it, holding the region's memory lock
 * shared so that UNMAP cannot free the page in between.
 */

/*
 * Whether a new leaf may be writable at once: the region allows writes (@writable, as the
 * fault found it under the memory lock) and so does the window. Then a read followed by a
 * write faults once, not twice.
 */
static bool msharefs_leaf_writable(struct vm_fault *vmf, bool writable)
{
	return writable && (vmf->vma->vm_flags & VM_WRITE);
}

/* A page frame of device memory, by a PTE (read-only until pfn_mkwrite says yes). */
static vm_fault_t msharefs_map_pfn(struct vm_fault *vmf, unsigned long pfn, bool writable)
{
	return vmf_insert_pfn(vmf->vma, vmf->address, pfn);
}

/* 2 MiB of device memory from @pfn, by a PMD leaf. */
static vm_fault_t msharefs_map_pfn_pmd(struct vm_fault *vmf, unsigned long pfn, bool writable)
{
	return vmf_insert_pfn_pmd(vmf, pfn, msharefs_leaf_writable(vmf, writable));
}

/*
 * A region's own 2 MiB folio (a chunk), by one PMD leaf, mapped here under the memory
 * lock, so that an UNMAP or SET_PROT, which holds it exclusively before it zaps, finds
 * the leaf. A write to a read-only leaf comes back here (huge_fault), which makes it
 * writable in place if the region allows.
 */
static vm_fault_t msharefs_map_folio_pmd(struct vm_fault *vmf, unsigned long pfn, bool writable)
{
	return vmf_insert_folio_pmd(vmf, pfn_folio(pfn), msharefs_leaf_writable(vmf, writable));
}

/*
 * A chunk may go in one PMD leaf from .fault too: 7.3 calls huge_fault for a read fault
 * only under THP "always" (a guest under 512 MiB has "never"), and a read-only leaf
 * would cost every later write a second fault. The policy is do_set_pmd()'s, which
 * mapped such folios before: not where THP is off for the window (MADV_NOHUGEPAGE,
 * prctl), nor where the PMD already has a PTE table. (Its other refusal, a CPU without
 * 2 MiB pages, is no x86-64 the module builds for.)
 */
static bool msharefs_leaf_fits(struct vm_fault *vmf, struct folio *folio)
{
	return folio_order(folio) == PMD_ORDER && pmd_none(*vmf->pmd) &&
	       !vma_thp_disabled(vmf->vma, vmf->vma->vm_flags, true) &&
	       thp_vma_suitable_order(vmf->vma, vmf->address & PMD_MASK, PMD_ORDER);
}

/*
 * A region's own page: a chunk by one PMD leaf where one fits (above); else (a file's
 * pinned page, a chunk's page under a PTE table or with MADV_NOHUGEPAGE) the page goes
 * to the core locked and with a reference, as a page-cache fault's does, and the core
 * maps it by a PTE. The folio lock, taken before the memory lock is dropped, is what
 * keeps UNMAP from zapping before the mapping exists: it locks each folio it took before
 * it zaps (msharefs_folio_settle()).
 */
static vm_fault_t msharefs_map_page(struct vm_fault *vmf, unsigned long pfn, bool writable)
{
	struct folio *folio = pfn_folio(pfn);

	if (msharefs_leaf_fits(vmf, folio))
		return vmf_insert_folio_pmd(vmf, folio, msharefs_leaf_writable(vmf, writable));
	vmf->page = pfn_to_page(pfn);
	folio_get(folio);
	folio_lock(folio);
	return VM_FAULT_LOCKED;
}

static bool msharefs_write_fault(struct vm_fault *vmf)
{
	return vmf->flags & FAULT_FLAG_WRITE;
}

/* A fault at the PMD level: a chunk by one leaf (@map); anything else falls back to PTEs. */
static vm_fault_t msharefs_leaf_fault(struct vm_fault *vmf, unsigned int order,
				      mshare_fault_map_fn map)
{
	if (order != PMD_ORDER)
		return VM_FAULT_FALLBACK;
	return mshare_region_fault(vmf->vma->vm_private_data, vmf,
				   vmf->pgoff & ~((1UL << PMD_ORDER) - 1), msharefs_write_fault(vmf),
				   true, map);
}

static vm_fault_t msharefs_huge_fault(struct vm_fault *vmf, unsigned int order)
{
	return msharefs_leaf_fault(vmf, order, msharefs_map_pfn_pmd);
}

static vm_fault_t msharefs_page_huge_fault(struct vm_fault *vmf, unsigned int order)
{
	return msharefs_leaf_fault(vmf, order, msharefs_map_folio_pmd);
}

static vm_fault_t msharefs_fault(struct vm_fault *vmf)
{
	return mshare_region_fault(vmf->vma->vm_private_data, vmf, vmf->pgoff,
				   msharefs_write_fault(vmf), false, msharefs_map_pfn);
}

static vm_fault_t msharefs_page_fault(struct vm_fault *vmf)
{
	return mshare_region_fault(vmf->vma->vm_private_data, vmf, vmf->pgoff,
				   msharefs_write_fault(vmf), false, msharefs_map_page);
}

/*
 * Writes through mappings of a window's own follow the region's protection
 * (MSHAREFS_SET_PROT): with these, the core maps its entries read-only (write-notify) and
 * asks here before it makes one writable (a PMD leaf asks huge_fault, above).
 *
 * For a page, Rust returns it locked once it checked the region, as a fault does: a
 * SET_PROT after the check waits for the lock before it zaps, so the entry the core then
 * makes writable is zapped. For a page frame the core checks that the entry did not change
 * before it writes it, and the zap clears it, so the answer alone is enough.
 */
static vm_fault_t msharefs_page_mkwrite(struct vm_fault *vmf)
{
	return mshare_region_page_mkwrite(vmf->vma->vm_private_data, vmf->pgoff,
					  page_to_pfn(vmf->page));
}

static vm_fault_t msharefs_pfn_mkwrite(struct vm_fault *vmf)
{
	return mshare_region_writable(vmf->vma->vm_private_data) ? 0 : VM_FAULT_SIGSEGV;
}

/* Windows are counted for the region's statistics (fork copies them through .open). */
static void msharefs_vm_open(struct vm_area_struct *vma)
{
	mshare_region_window_opened(vma->vm_private_data, vma->vm_flags & VM_SHARED_PT);
}

static void msharefs_vm_close(struct vm_area_struct *vma)
{
	mshare_region_window_closed(vma->vm_private_data, vma->vm_flags & VM_SHARED_PT);
}

/* The window is all or nothing: partial munmap/mprotect and mremap are refused. */
static int msharefs_may_split(struct vm_area_struct *vma, unsigned long addr)
{
	return -EINVAL;
}

static int msharefs_mremap(struct vm_area_struct *vma)
{
	return -EINVAL;
}

/* Mode C over device memory: page frames, no struct pages. */
const struct vm_operations_struct msharefs_vm_ops = {
	.open		= msharefs_vm_open,
	.close		= msharefs_vm_close,
	.fault		= msharefs_fault,
	.huge_fault	= msharefs_huge_fault,
	.pfn_mkwrite	= msharefs_pfn_mkwrite,
	.may_split	= msharefs_may_split,
	.mremap		= msharefs_mremap,
};

/* Mode C over a region's own pages. */
const struct vm_operations_struct msharefs_page_vm_ops = {
	.open		= msharefs_vm_open,
	.close		= msharefs_vm_close,
	.fault		= msharefs_page_fault,
	.huge_fault	= msharefs_page_huge_fault,
	.page_mkwrite	= msharefs_page_mkwrite,
	.may_split	= msharefs_may_split,
	.mremap		= msharefs_mremap,
};

#ifdef CONFIG_SHARED_PGTABLE
/*
 * Mode B: the core links the region's shared PTE tables (filled by Rust) into the window
 * on its first fault and unlinks them on unmap; the entries are never written from here.
 */
static struct ptdesc *msharefs_shared_pgtable(struct vm_area_struct *vma, unsigned long addr)
{
	struct ptdesc *table = NULL;
	int err = mshare_region_table(vma->vm_private_data, linear_page_index(vma, addr), &table);

	return err ? ERR_PTR(err) : table;
}

/* No entry behind a linked table, or no table (Rust says whether to retry). */
static vm_fault_t msharefs_shared_fault(struct vm_fault *vmf)
{
	return mshare_region_shared_fault(vmf->vma->vm_private_data, vmf->pgoff);
}

/*
 * A write to a read-only shared entry: the region is read-only (MSHAREFS_SET_PROT), or
 * was until just now. page_mkwrite for a region's folios, pfn_mkwrite for device memory.
 *
 * Never 0: the core would then make the entry writable itself (wp_page_reuse), in the
 * table every sharer maps, after checking only that the entry is what it was. A
 * SET_PROT read-write then read-only between this check and that write (the table
 * relinked meanwhile by another thread's fault) leaves the entry as it was, and the core
 * would make it writable in a read-only region. A writable region's entries are already
 * writable once mshare_region_writable() says so (SET_PROT rewrites them before it lets
 * go of the region): retrying the access finds them.
 */
static vm_fault_t msharefs_shared_mkwrite(struct vm_fault *vmf)
{
	return mshare_region_writable(vmf->vma->vm_private_data) ? VM_FAULT_NOPAGE : VM_FAULT_SIGSEGV;
}

/* The window has the region's protection: MSHAREFS_SET_PROT changes it for all. */
static int msharefs_shared_mprotect(struct vm_area_struct *vma, unsigned long start,
				    unsigned long end, unsigned long newflags)
{
	return -EINVAL;
}

const struct vm_operations_struct msharefs_shared_vm_ops = {
	.open		= msharefs_vm_open,
	.close		= msharefs_vm_close,
	.fault		= msharefs_shared_fault,
	.page_mkwrite	= msharefs_shared_mkwrite,
	.pfn_mkwrite	= msharefs_shared_mkwrite,
	.shared_pgtable	= msharefs_shared_pgtable,
	.may_split	= msharefs_may_split,
	.mremap		= msharefs_mremap,
	.mprotect	= msharefs_shared_mprotect,
};

/*
 * Mode B, a window of whole, aligned GiBs: the core links the region's PMD tables into the
 * window's PUD entries (made by Rust, one per GiB, with every entry the region's).
 */
static struct ptdesc *msharefs_shared_pmd_table(struct vm_area_struct *vma, unsigned long addr)
{
	struct ptdesc *table = NULL;
	int err = mshare_region_pmd_table(vma->vm_private_data, linear_page_index(vma, addr), &table);

	return err ? ERR_PTR(err) : table;
}

/*
 * At the PMD level of a shared PMD table: an empty entry is a hole (or memory being given
 * to it right now: retry), and a write to a read-only 2 MiB leaf is SIGSEGV unless the
 * region became writable meanwhile. Never VM_FAULT_FALLBACK at the PMD level: the core
 * would then split the leaf, which other processes map too.
 */
static vm_fault_t msharefs_shared_huge_fault(struct vm_fault *vmf, unsigned int order)
{
	if (order != PMD_ORDER)
		return VM_FAULT_FALLBACK;
	if (pmd_none(pmdp_get_lockless(vmf->pmd)))
		return msharefs_shared_fault(vmf);
	return msharefs_shared_mkwrite(vmf);
}

const struct vm_operations_struct msharefs_shared_pmd_vm_ops = {
	.open		  = msharefs_vm_open,
	.close		  = msharefs_vm_close,
	.fault		  = msharefs_shared_fault,
	.huge_fault	  = msharefs_shared_huge_fault,
	.page_mkwrite	  = msharefs_shared_mkwrite,
	.pfn_mkwrite	  = msharefs_shared_mkwrite,
	.shared_pmd_table = msharefs_shared_pmd_table,
	.may_split	  = msharefs_may_split,
	.mremap		  = msharefs_mremap,
	.mprotect	  = msharefs_shared_mprotect,
};
#endif

/* A window of a device's memory: page frames with no struct pages. */
void msharefs_vma_set_pfnmap(struct vm_area_struct *vma)
{
	vm_flags_set(vma, VM_PFNMAP);
}

/*
 * Gives a window being mapped the operations Rust chose for it and its region; the shared
 * kinds also mark it VM_SHARED_PT, which tells the core that its tables are the driver's.
 */
int msharefs_vma_set_ops(struct vm_area_struct *vma, enum mshare_window_ops ops,
			 struct mshare_region *region)
{
	switch (ops) {
	case MSHARE_WINDOW_DEVICE:
		vma->vm_ops = &msharefs_vm_ops;
		break;
	case MSHARE_WINDOW_PAGES:
		vma->vm_ops = &msharefs_page_vm_ops;
		break;
#ifdef CONFIG_SHARED_PGTABLE
	case MSHARE_WINDOW_SHARED:
		vm_flags_set(vma, VM_SHARED_PT);
		vma->vm_ops = &msharefs_shared_vm_ops;
		break;
	case MSHARE_WINDOW_SHARED_PMD:
		vm_flags_set(vma, VM_SHARED_PT);
		vma->vm_ops = &msharefs_shared_pmd_vm_ops;
		break;
#endif
	default:
		return -EINVAL;
	}
	vma->vm_private_data = region;
	return 0;
}
