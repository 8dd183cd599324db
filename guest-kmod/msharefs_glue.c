// SPDX-License-Identifier: GPL-2.0
/*
 * msharefs: the VFS side of mshare regions, in C only because Rust cannot register a
 * filesystem in 7.3 (struct fs_context is opaque to its bindings). Each function here is
 * glue: regions, their sizes and their ioctls live in Rust (msharefs.rs).
 *
 * /sys/fs/mshare holds one file per region plus "mshare_info". The root directory is
 * sticky and world-writable, like /tmp: anyone may create a region, its file mode decides
 * who may open (attach) it, and only its owner may remove it.
 */
#include <linux/fcntl.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/falloc.h>
#include <linux/fs_context.h>
#include <linux/fs_parser.h>
#include <linux/gfp.h>
#include <linux/huge_mm.h>
#include <linux/mm.h>
#include <linux/mman.h>
#include <linux/kobject.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/string.h>
#include <linux/pagemap.h>
#include <linux/seq_file.h>
#include <linux/shmem_fs.h>
#include <linux/sysfs.h>

#include "msharefs.h"

#define MSHAREFS_MAGIC 0x4d534852

/* The end of user address space, which a region's fixed start must leave it below. */
unsigned long msharefs_user_end(void)
{
	return TASK_SIZE_MAX;
}

/* Called from Rust once a region's size is set. */
void msharefs_inode_set_size(void *inode, loff_t size)
{
	i_size_write(inode, size);
}

/*
 * An msharefs instance: one per API (every mount of one API shows the same regions), the
 * key of its superblock and its s_fs_info. Its limits (size=, nr_regions=; 0: none) bound
 * the regions made by name in it and the memory given to them, as tmpfs's bound a mount:
 * a memory cgroup bounds a user, these bound a filesystem any user can write to.
 * Unnamed regions (/dev/mshare) are not the filesystem's, as memfds are not /dev/shm's.
 */
struct msharefs_instance {
	int api;
	u64 max_bytes;
	unsigned int max_regions;
	atomic64_t bytes;
	atomic_t regions;
};

static struct msharefs_instance msharefs_instances[] = { { .api = 1 }, { .api = 3 } };

static const struct inode_operations msharefs_region_iops;
static const struct file_operations msharefs_region_fops;

/* A region made by name in a mount (not a device's, not /dev/mshare's). */
static bool msharefs_named_region(struct inode *inode)
{
	return inode->i_op == &msharefs_region_iops && inode->i_fop == &msharefs_region_fops;
}

/* The instance whose limits bound @inode's memory: NULL for any but a named region. */
static struct msharefs_instance *msharefs_limited(struct inode *inode)
{
	return inode && msharefs_named_region(inode) ? inode->i_sb->s_fs_info : NULL;
}

/* Counts @bytes more memory of @in within its size= limit. */
static bool msharefs_charge_bytes(struct msharefs_instance *in, u64 bytes)
{
	u64 max = READ_ONCE(in->max_bytes);

	if (atomic64_add_return(bytes, &in->bytes) > max && max) {
		atomic64_sub(bytes, &in->bytes);
		return false;
	}
	return true;
}

/* Gives back @bytes that msharefs_charge_bytes() counted. */
static void msharefs_uncharge_bytes(struct msharefs_instance *in, u64 bytes)
{
	atomic64_sub(bytes, &in->bytes);
}

/* Counts one more named region of @in within its nr_regions= limit. */
static bool msharefs_charge_region(struct msharefs_instance *in)
{
	unsigned int max = READ_ONCE(in->max_regions);

	if (atomic_inc_return(&in->regions) > max && max) {
		atomic_dec(&in->regions);
		return false;
	}
	return true;
}

/*
 * Backing memory: one zeroed 2^order-page folio (0 if none), charged to the memory cgroup
 * of the task that gives the region memory (CREATE_MAPPING, MSHARE_MAP), as a tmpfs page
 * is charged to whoever faults it in, and uncharged when it is freed: a user under
 * memory.max gets ENOMEM past it, not memory of nobody's. Its mapping and index are
 * the region file's and the chunk's page offset, as a page-cache folio's would be, so
 * that futexes key it by (inode, offset) in every process, however it maps the region.
 * It is in no page-cache xarray and on no LRU list: reclaim, compaction and migration do
 * not see it, and the region holds its reference until msharefs_free_chunk().
 */
long msharefs_alloc_chunk(unsigned int order, void *inode, unsigned long index)
{
	struct msharefs_instance *limited = msharefs_limited(inode);
	struct folio *folio;

	if (limited && !msharefs_charge_bytes(limited, PAGE_SIZE << order))
		return -ENOSPC;
	folio = folio_alloc(GFP_KERNEL_ACCOUNT | __GFP_ZERO | __GFP_NOWARN, order);
	if (!folio) {
		if (limited)
			msharefs_uncharge_bytes(limited, PAGE_SIZE << order);
		return -ENOMEM;
	}
	if (inode) {
		folio->mapping = ((struct inode *)inode)->i_mapping;
		folio->index = index;
	}
	/* Who to give the bytes back to: the instance outlives the inode, which may not. */
	folio->private = limited;
	return folio_pfn(folio);
}

/*
 * The chunk left the region and no process maps it any more. A GUP reference (a futex
 * lookup, O_DIRECT) may keep the folio a little longer: without its mapping it is then
 * memory of no file, which a racing futex lookup reports as EFAULT.
 */
void msharefs_free_chunk(unsigned long pfn)
{
	struct folio *folio = pfn_folio(pfn);
	struct msharefs_instance *limited = folio->private;

	if (limited)
		msharefs_uncharge_bytes(limited, folio_size(folio));
	folio->private = NULL;
	WRITE_ONCE(folio->mapping, NULL);
	folio_put(folio);
}

/* UNMAP: no fault may map a chunk of the range between its zap and its freeing. */
void msharefs_invalidate_lock(void *inode)
{
	filemap_invalidate_lock(((struct inode *)inode)->i_mapping);
}

void msharefs_invalidate_unlock(void *inode)
{
	filemap_invalidate_unlock(((struct inode *)inode)->i_mapping);
}

/* read/write: no chunk is freed while they copy (UNMAP holds the lock exclusive). */
void msharefs_invalidate_lock_shared(void *inode)
{
	filemap_invalidate_lock_shared(((struct inode *)inode)->i_mapping);
}

void msharefs_invalidate_unlock_shared(void *inode)
{
	filemap_invalidate_unlock_shared(((struct inode *)inode)->i_mapping);
}

/* A page of a region through the direct map (a chunk's, or a file's pinned page). */
void *msharefs_page_address(unsigned long pfn)
{
	return page_address(pfn_to_page(pfn));
}

/*
 * A shmem file (tmpfs, memfd, SysV shm) for CREATE_MAPPING/MSHARE_MAP with a descriptor,
 * taken as a shared writable mmap of it would be: open for writing, not write-sealed,
 * with a reference and a writable-mapping count (F_SEAL_WRITE is refused while they
 * last). Policy (which region, which range) is Rust's.
 */
int msharefs_file_get(int fd, void **out)
{
	struct file *file = fget(fd);
	int err;

	if (!file)
		return -EBADF;
	err = -EOPNOTSUPP;
	if (!shmem_file(file))
		goto put;
	err = -EACCES;
	if (!(file->f_mode & FMODE_WRITE))
		goto put;
	err = -EPERM;
	if (SHMEM_I(file_inode(file))->seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))
		goto put;
	err = mapping_map_writable(file->f_mapping);
	if (err)
		goto put;
	*out = file;
	return 0;
put:
	fput(file);
	return err;
}

void msharefs_file_put(void *file)
{
	mapping_unmap_writable(((struct file *)file)->f_mapping);
	fput(file);
}

/*
 * Pins the 2 MiB of @file at @offset (allocating pages where the file has none): each
 * page's frame in @frames (PTRS_PER_PTE), the folios pinned in @folios (as many); returns
 * their number, or -errno (EINVAL past the end of the file).
 */
long msharefs_file_pin(void *file, loff_t offset, unsigned long *frames, void **folios)
{
	struct folio **pinned = (struct folio **)folios;
	unsigned long page = 0;
	pgoff_t first;
	long nr, i;

	nr = memfd_pin_folios(file, offset, offset + PTRS_PER_PTE * PAGE_SIZE - 1, pinned,
			      PTRS_PER_PTE, &first);
	if (nr < 0)
		return nr;
	for (i = 0; i < nr; i++) {
		unsigned long at = i ? 0 : first >> PAGE_SHIFT;

		for (; at < folio_nr_pages(pinned[i]) && page < PTRS_PER_PTE; at++)
			frames[page++] = folio_pfn(pinned[i]) + at;
	}
	/* The folios cover the range: memfd_pin_folios() fills every hole. */
	if (WARN_ON_ONCE(page < PTRS_PER_PTE)) {
		unpin_folios(pinned, nr);
		return -EINVAL;
	}
	return nr;
}

void msharefs_file_unpin(void **folios, unsigned int nr)
{
	struct folio **pinned = (struct folio **)folios;
	unsigned int i;

	/*
	 * Processes wrote the folios through the region's tables, whose dirty bits the
	 * core never reads: unpinned clean, a shmem folio could be dropped with its data.
	 */
	for (i = 0; i < nr; i++)
		folio_mark_dirty_lock(pinned[i]);
	unpin_folios(pinned, nr);
}

/* Removes [offset, offset + len) of the region from every process that maps it. */
void msharefs_zap(void *inode, loff_t offset, loff_t len)
{
	unmap_mapping_range(((struct inode *)inode)->i_mapping, offset, len, 1);
}

/*
 * Mapping without the core-mm patch ("mode C"): each granule of the window is one PMD
 * leaf pointing at its chunk, so a process pays no PTE table for it, but every process
 * takes its own faults. The window's bounds and alignment are checked in Rust.
 */
static vm_fault_t msharefs_pfn_result(long pfn)
{
	/* A hole (no CREATE_MAPPING there, or UNMAPped) is SIGSEGV; past the end, SIGBUS. */
	return pfn == 0 ? VM_FAULT_SIGSEGV : VM_FAULT_SIGBUS;
}

/* Counts a fault that mapped memory for the statistics (a lookup alone maps nothing). */
static vm_fault_t msharefs_mapped(struct vm_fault *vmf, vm_fault_t ret)
{
	if (ret == VM_FAULT_NOPAGE)
		mshare_region_fault_mapped(vmf->vma->vm_private_data);
	return ret;
}

/*
 * Faults look the page up and insert it under the invalidate lock (shared), so UNMAP
 * (which holds it exclusively) cannot free the chunk in between.
 */
static vm_fault_t msharefs_huge_fault(struct vm_fault *vmf, unsigned int order)
{
	struct address_space *mapping = vmf->vma->vm_file->f_mapping;
	vm_fault_t ret;
	long pfn;

	if (order != PMD_ORDER)
		return VM_FAULT_FALLBACK;
	filemap_invalidate_lock_shared(mapping);
	pfn = mshare_region_pfn(vmf->vma->vm_private_data, vmf->pgoff & ~((1UL << PMD_ORDER) - 1));
	ret = pfn > 0 ? msharefs_mapped(vmf, vmf_insert_pfn_pmd(vmf, pfn, vmf->flags & FAULT_FLAG_WRITE)) :
			msharefs_pfn_result(pfn);
	filemap_invalidate_unlock_shared(mapping);
	return ret;
}

static vm_fault_t msharefs_fault(struct vm_fault *vmf)
{
	struct address_space *mapping = vmf->vma->vm_file->f_mapping;
	vm_fault_t ret;
	long pfn;

	filemap_invalidate_lock_shared(mapping);
	pfn = mshare_region_pfn(vmf->vma->vm_private_data, vmf->pgoff);
	ret = pfn > 0 ? msharefs_mapped(vmf, vmf_insert_pfn(vmf->vma, vmf->address, pfn)) : msharefs_pfn_result(pfn);
	filemap_invalidate_unlock_shared(mapping);
	return ret;
}

/*
 * Mode C for a region's own pages (a chunk's folio, a file's pinned pages): the page goes
 * to the core locked and with a reference, as a page-cache fault's does, and the core
 * maps it: a whole 2 MiB folio by one PMD leaf when the PMD is empty (do_set_pmd(), which
 * the THP sysfs setting does not stop: the folio exists already), else its pages by PTEs.
 * The folio lock, taken before the invalidate lock is dropped, is what keeps UNMAP from
 * zapping before the mapping exists: it locks each folio it took before it zaps
 * (msharefs_folio_settle()).
 */
static vm_fault_t msharefs_page_fault(struct vm_fault *vmf)
{
	struct address_space *mapping = vmf->vma->vm_file->f_mapping;
	struct folio *folio = NULL;
	long pfn;

	filemap_invalidate_lock_shared(mapping);
	pfn = mshare_region_pfn(vmf->vma->vm_private_data, vmf->pgoff);
	if (pfn > 0) {
		vmf->page = pfn_to_page(pfn);
		folio = page_folio(vmf->page);
		folio_get(folio);
		folio_lock(folio);
	}
	filemap_invalidate_unlock_shared(mapping);
	if (!folio)
		return msharefs_pfn_result(pfn);
	mshare_region_fault_mapped(vmf->vma->vm_private_data);
	return VM_FAULT_LOCKED;
}

/* UNMAP took this page from its region: wait for a fault that is mapping it. */
void msharefs_folio_settle(unsigned long pfn)
{
	struct folio *folio = pfn_folio(pfn);

	folio_lock(folio);
	folio_unlock(folio);
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
static const struct vm_operations_struct msharefs_vm_ops = {
	.open		= msharefs_vm_open,
	.close		= msharefs_vm_close,
	.fault		= msharefs_fault,
	.huge_fault	= msharefs_huge_fault,
	.may_split	= msharefs_may_split,
	.mremap		= msharefs_mremap,
};

/* Mode C over a region's own pages. */
static const struct vm_operations_struct msharefs_page_vm_ops = {
	.open		= msharefs_vm_open,
	.close		= msharefs_vm_close,
	.fault		= msharefs_page_fault,
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
	void *table = NULL;
	int err = mshare_region_table(vma->vm_private_data, linear_page_index(vma, addr), &table);

	return err ? ERR_PTR(err) : table;
}

/*
 * No entry behind a linked table, or no table: a hole is SIGSEGV. Memory with no entry
 * means the table was unlinked under this fault (UNMAP or SET_PROT of another part):
 * retry, which links it again.
 */
static vm_fault_t msharefs_shared_fault(struct vm_fault *vmf)
{
	long pfn = mshare_region_pfn(vmf->vma->vm_private_data, vmf->pgoff);

	return pfn > 0 ? VM_FAULT_NOPAGE : msharefs_pfn_result(pfn);
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

static const struct vm_operations_struct msharefs_shared_vm_ops = {
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
	void *table = NULL;
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

static const struct vm_operations_struct msharefs_shared_pmd_vm_ops = {
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

/* The API a mount speaks (api=v1|v3), which gives the ioctl numbers their meaning. */
static int msharefs_api(struct inode *inode)
{
	return ((struct msharefs_instance *)inode->i_sb->s_fs_info)->api;
}

static int msharefs_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct inode *inode = file_inode(file);
	void *region = inode->i_private;
	int shared = mshare_region_mmap_check(region, vma->vm_start, vma->vm_end, vma->vm_pgoff,
					      vma->vm_flags & VM_MAYSHARE, vma->vm_flags & VM_WRITE);
	bool pages;

	if (shared < 0)
		return shared;
	/*
	 * A device's memory has no struct pages (VM_PFNMAP). A region's own pages are normal
	 * pages, which GUP and futexes take: through shared tables the window is VM_MIXEDMAP
	 * (which also keeps NUMA balancing away), but a window of its own (mode C) is not,
	 * for the core maps a chunk there as it maps a page-cache folio (do_set_pmd(): rmap,
	 * RSS, a reference), and in a VM_MIXEDMAP file VMA splitting such a leaf (a partial
	 * MADV_DONTNEED) only clears it, as for a PFN leaf, leaking all three. VM_DONTEXPAND
	 * (in VM_SPECIAL) keeps mlock, khugepaged and KSM away; core dumps leave the region
	 * out (VM_DONTDUMP), as they do device memory.
	 */
	pages = mshare_region_has_pages(region);
	vm_flags_set(vma, (pages ? (shared ? VM_MIXEDMAP : 0) : VM_PFNMAP) | VM_DONTEXPAND | VM_DONTDUMP);
	/* A window mapped read-only stays so: write access is the region's to give. */
	if (!(vma->vm_flags & VM_WRITE))
		vm_flags_clear(vma, VM_MAYWRITE);
	vma->vm_ops = pages ? &msharefs_page_vm_ops : &msharefs_vm_ops;
#ifdef CONFIG_SHARED_PGTABLE
	if (shared) {
		vm_flags_set(vma, VM_SHARED_PT);
		vma->vm_ops = shared == 2 ? &msharefs_shared_pmd_vm_ops : &msharefs_shared_vm_ops;
	}
#endif
	vma->vm_private_data = region;
	mshare_region_window_opened(region, shared > 0);
	return 0;
}

static long msharefs_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct inode *inode = file_inode(file);

	return mshare_region_ioctl(inode->i_private, inode, msharefs_api(inode), cmd, arg,
				   file->f_mode & FMODE_WRITE);
}

/*
 * A window of whole GiBs at a GiB-aligned offset goes to a GiB-aligned address, where it
 * can share the region's PMD tables: the first fit for the window and a GiB more, rounded
 * up (the mmap lock is held, so the gap stays free).
 */
static unsigned long msharefs_pud_aligned_area(struct file *file, unsigned long len,
					       unsigned long pgoff, unsigned long flags)
{
	unsigned long found;

	if (len > TASK_SIZE - PUD_SIZE)
		return -ENOMEM;
	found = mm_get_unmapped_area(file, 0, len + PUD_SIZE, pgoff, flags);
	if (IS_ERR_VALUE(found))
		return found;
	return ALIGN(found, PUD_SIZE);
}

/*
 * Any other window the kernel places spans as few GiBs as its length allows, one for a
 * window of at most a GiB: in mode B each GiB of a window is a PMD table of every
 * sharer's own (under which the shared PTE tables are linked), which a window across a
 * GiB boundary costs each sharer twice. Rust picks
 * the address in the first fit for the window and a GiB more (mshare_window_address,
 * which shows that the window stays inside it); with no such fit, where THP would.
 */
static unsigned long msharefs_fewest_gibs_area(struct file *file, unsigned long len,
					       unsigned long pgoff, unsigned long flags)
{
	unsigned long found = -ENOMEM;

	if (len <= TASK_SIZE - PUD_SIZE)
		found = mm_get_unmapped_area(file, 0, len + PUD_SIZE, pgoff, flags);
	if (IS_ERR_VALUE(found))
		return thp_get_unmapped_area(file, 0, len, pgoff, flags);
	return mshare_window_address(found, len);
}

/*
 * Where a window goes, checked before mmap unmaps anything of the caller's (Rust decides:
 * a refused MAP_FIXED must not have cleared the caller's mapping at addr). A region with
 * a fixed start (the v1 API's SET_SIZE start) is mapped there. Called with the mmap lock
 * held, so the range found free stays free.
 */
static unsigned long msharefs_get_unmapped_area(struct file *file, unsigned long addr,
						unsigned long len, unsigned long pgoff,
						unsigned long flags)
{
	struct inode *inode = file_inode(file);
	long at = mshare_region_place(inode->i_private, msharefs_api(inode), addr, len, pgoff,
				      flags & MAP_FIXED, (flags & MAP_TYPE) != MAP_PRIVATE);

	if (at < 0)
		return at;
	if (flags & MAP_FIXED)
		return addr;
	if (!at && !addr && IS_ALIGNED(len | (pgoff << PAGE_SHIFT), PUD_SIZE))
		return msharefs_pud_aligned_area(file, len, pgoff, flags);
	if (!at && !addr)
		return msharefs_fewest_gibs_area(file, len, pgoff, flags);
	if (!at)
		return thp_get_unmapped_area(file, addr, len, pgoff, flags);
	if (len > TASK_SIZE || at > TASK_SIZE - len)
		return -ENOMEM;
	if (find_vma_intersection(current->mm, at, at + len))
		return -ENOMEM;
	return at;
}

static ssize_t msharefs_read(struct file *file, char __user *buf, size_t len, loff_t *pos)
{
	struct inode *inode = file_inode(file);

	return mshare_region_read(inode->i_private, inode, buf, len, pos);
}

static ssize_t msharefs_write(struct file *file, const char __user *buf, size_t len, loff_t *pos)
{
	struct inode *inode = file_inode(file);

	return mshare_region_write(inode->i_private, inode, buf, len, pos);
}

/* fallocate(fd, 0, 0, size) sets the size, as ftruncate does (the v2/v3 series). */
static long msharefs_fallocate(struct file *file, int mode, loff_t offset, loff_t len)
{
	struct inode *inode = file_inode(file);

	if (!(file->f_mode & FMODE_WRITE))
		return -EBADF;
	return mshare_region_fallocate(inode->i_private, inode, mode, offset, len);
}

static int msharefs_setattr(struct mnt_idmap *idmap, struct dentry *dentry, struct iattr *attr)
{
	struct inode *inode = d_inode(dentry);
	int err = setattr_prepare(idmap, dentry, attr);

	if (err)
		return err;
	if (attr->ia_valid & ATTR_SIZE) {
		err = mshare_region_truncate(inode->i_private, inode, attr->ia_size,
					     attr->ia_valid & ATTR_OPEN);
		if (err)
			return err;
	}
	attr->ia_valid &= ~ATTR_SIZE;
	setattr_copy(idmap, inode, attr);
	return 0;
}

static const struct file_operations msharefs_region_fops = {
	.owner		= THIS_MODULE,
	.open		= simple_open,
	.read		= msharefs_read,
	.write		= msharefs_write,
	.llseek		= generic_file_llseek,
	.fsync		= noop_fsync,
	.unlocked_ioctl	= msharefs_ioctl,
	.mmap		= msharefs_mmap,
	.get_unmapped_area = msharefs_get_unmapped_area,
	.fallocate	= msharefs_fallocate,
};

/* The same operations for device regions (shared with the driver, which may unbind). */
static const struct file_operations msharefs_device_fops = {
	.owner		= THIS_MODULE,
	.open		= simple_open,
	.read		= msharefs_read,
	.write		= msharefs_write,
	.llseek		= generic_file_llseek,
	.fsync		= noop_fsync,
	.unlocked_ioctl	= msharefs_ioctl,
	.mmap		= msharefs_mmap,
	.get_unmapped_area = msharefs_get_unmapped_area,
	.fallocate	= msharefs_fallocate,
};

/*
 * A region's folios carry its inode's mapping (see msharefs_alloc_chunk()); GUP unpins and
 * zaps mark them dirty through it. Nothing is ever written back: the memory is the truth.
 */
static const struct address_space_operations msharefs_region_aops = {
	.dirty_folio	= noop_dirty_folio,
};

/* An inode that shows a region of folios (msharefs files, /dev/mshare regions). */
static void msharefs_region_mapping_init(struct inode *inode)
{
	inode->i_mapping->a_ops = &msharefs_region_aops;
	mapping_set_unevictable(inode->i_mapping);
}

static const struct inode_operations msharefs_region_iops = {
	.setattr	= msharefs_setattr,
	.getattr	= simple_getattr,
};

/* Regions with no name (/dev/mshare MSHARE_CREATE): they pin msharefs while they live. */
static const struct inode_operations msharefs_anonymous_iops = {
	.setattr	= msharefs_setattr,
	.getattr	= simple_getattr,
};

static struct vfsmount *msharefs_mnt;
static int msharefs_mnt_count;
static struct file_system_type msharefs_type;

/* A region reachable only through the file returned (and its copies, and mappings). */
struct file *msharefs_new_anonymous_file(void)
{
	struct inode *inode;
	struct file *file;
	int err = simple_pin_fs(&msharefs_type, &msharefs_mnt, &msharefs_mnt_count);

	if (err)
		return ERR_PTR(err);
	file = ERR_PTR(-ENOMEM);
	inode = new_inode(msharefs_mnt->mnt_sb);
	if (!inode)
		goto unpin;
	/* From here on, evicting the inode unpins msharefs. */
	inode->i_op = &msharefs_anonymous_iops;
	msharefs_region_mapping_init(inode);
	inode->i_private = mshare_region_new(inode);
	if (!inode->i_private) {
		iput(inode);
		return file;
	}
	inode->i_ino = get_next_ino();
	inode_init_owner(&nop_mnt_idmap, inode, NULL, S_IFREG | 0600);
	simple_inode_init_ts(inode);
	inode->i_fop = &msharefs_region_fops;
	/* The file's reference on its f_op owner, which fput() drops (alloc_file_pseudo takes none). */
	__module_get(THIS_MODULE);
	file = alloc_file_pseudo(inode, msharefs_mnt, "[mshare]", O_RDWR, &msharefs_region_fops);
	if (IS_ERR(file)) {
		module_put(THIS_MODULE);
		iput(inode);
	}
	return file;
unpin:
	simple_release_fs(&msharefs_mnt, &msharefs_mnt_count);
	return file;
}

/* The region behind an msharefs file (and its inode), or NULL for any other file. */
void *msharefs_file_region(struct file *file, void **inode)
{
	if (file->f_op != &msharefs_region_fops && file->f_op != &msharefs_device_fops)
		return NULL;
	*inode = file_inode(file);
	return file_inode(file)->i_private;
}

/* Unmaps the window at [addr, addr + size) of the caller: a whole msharefs window only. */
int msharefs_detach(unsigned long addr, unsigned long size)
{
	struct mm_struct *mm = current->mm;
	struct vm_area_struct *vma;
	void *inode;
	bool window;

	if (mmap_read_lock_killable(mm))
		return -EINTR;
	vma = vma_lookup(mm, addr);
	window = vma && vma->vm_start == addr && vma->vm_end - addr == size && vma->vm_file &&
		 msharefs_file_region(vma->vm_file, &inode);
	mmap_read_unlock(mm);
	return window ? vm_munmap(addr, size) : -EINVAL;
}

static int msharefs_create(struct mnt_idmap *idmap, struct inode *dir, struct dentry *dentry,
			   umode_t mode)
{
	struct msharefs_instance *in = dir->i_sb->s_fs_info;
	struct inode *inode;

	if (!msharefs_charge_region(in))
		return -ENOSPC;
	inode = new_inode(dir->i_sb);
	if (!inode)
		goto uncharge;
	msharefs_region_mapping_init(inode);
	inode->i_private = mshare_region_new(inode);
	if (!inode->i_private) {
		iput(inode);
		goto uncharge;
	}
	inode->i_ino = get_next_ino();
	inode_init_owner(&nop_mnt_idmap, inode, dir, S_IFREG | (mode & 0777));
	simple_inode_init_ts(inode);
	/* From here on, evicting the inode gives the region's count back. */
	inode->i_op = &msharefs_region_iops;
	inode->i_fop = &msharefs_region_fops;
	d_make_persistent(dentry, inode);
	inode_set_mtime_to_ts(dir, inode_set_ctime_current(dir));
	return 0;
uncharge:
	atomic_dec(&in->regions);
	return -ENOMEM;
}

static const struct inode_operations msharefs_dir_iops = {
	.create		= msharefs_create,
	.lookup		= simple_lookup,
	.unlink		= simple_unlink,
};

static ssize_t msharefs_info_read(struct file *file, char __user *buf, size_t len, loff_t *pos)
{
	return mshare_info_read(buf, len, pos);
}

static const struct file_operations msharefs_info_fops = {
	.read		= msharefs_info_read,
	.llseek		= default_llseek,
};

static ssize_t msharefs_stats_read(struct file *file, char __user *buf, size_t len, loff_t *pos)
{
	return mshare_stats_read(buf, len, pos);
}

static const struct file_operations msharefs_stats_fops = {
	.read		= msharefs_stats_read,
	.llseek		= default_llseek,
};

static void msharefs_evict_inode(struct inode *inode)
{
	struct msharefs_instance *limited;

	truncate_inode_pages_final(&inode->i_data);
	clear_inode(inode);
	/* Every region inode holds a reference to its region (until attach succeeded, none). */
	if ((inode->i_fop == &msharefs_region_fops || inode->i_fop == &msharefs_device_fops) &&
	    inode->i_private)
		mshare_region_release(inode->i_private, inode);
	if (inode->i_op == &msharefs_anonymous_iops)
		simple_release_fs(&msharefs_mnt, &msharefs_mnt_count);
	limited = msharefs_limited(inode);
	if (limited)
		atomic_dec(&limited->regions);
}

static int msharefs_show_options(struct seq_file *m, struct dentry *root)
{
	struct msharefs_instance *in = root->d_sb->s_fs_info;

	seq_printf(m, ",api=v%d", in->api);
	if (READ_ONCE(in->max_bytes))
		seq_printf(m, ",size=%llu", READ_ONCE(in->max_bytes));
	if (READ_ONCE(in->max_regions))
		seq_printf(m, ",nr_regions=%u", READ_ONCE(in->max_regions));
	return 0;
}

static const struct super_operations msharefs_sops = {
	.statfs		= simple_statfs,
	.evict_inode	= msharefs_evict_inode,
	.show_options	= msharefs_show_options,
};

/*
 * ivshmem regions, registered by the PCI driver before msharefs is mounted: they appear
 * as /sys/fs/mshare/ivshmem/<name>, backed by the device, with no creator. The table
 * borrows the driver's reference: a region leaves it (msharefs_remove_device, under the
 * lock) before the driver lets go, and each inode made from it takes its own.
 */
#define MSHAREFS_MAX_DEVICES 32

static struct msharefs_device {
	char name[NAME_MAX + 1];
	void *region;
	loff_t size;
	bool read_only;
} msharefs_devices[MSHAREFS_MAX_DEVICES];
static DEFINE_MUTEX(msharefs_devices_lock);

int msharefs_add_device(const char *name, void *region, loff_t size, bool read_only)
{
	int i;

	guard(mutex)(&msharefs_devices_lock);
	/* Two devices of one name would be two dentries of one name. */
	for (i = 0; i < MSHAREFS_MAX_DEVICES; i++)
		if (msharefs_devices[i].region && !strcmp(msharefs_devices[i].name, name))
			return -EEXIST;
	for (i = 0; i < MSHAREFS_MAX_DEVICES; i++) {
		if (!msharefs_devices[i].region) {
			strscpy(msharefs_devices[i].name, name, sizeof(msharefs_devices[i].name));
			msharefs_devices[i].region = region;
			msharefs_devices[i].size = size;
			msharefs_devices[i].read_only = read_only;
			return 0;
		}
	}
	return -ENOSPC;
}

void msharefs_remove_device(void *region)
{
	int i;

	mutex_lock(&msharefs_devices_lock);
	for (i = 0; i < MSHAREFS_MAX_DEVICES; i++)
		if (msharefs_devices[i].region == region)
			msharefs_devices[i].region = NULL;
	mutex_unlock(&msharefs_devices_lock);
}

static struct inode *msharefs_new_inode(struct super_block *sb, umode_t mode)
{
	struct inode *inode = new_inode(sb);

	if (inode) {
		inode->i_ino = get_next_ino();
		inode->i_mode = mode;
		simple_inode_init_ts(inode);
	}
	return inode;
}

/* A persistent dentry named @name under @parent for @inode (dropped at unmount). */
static int msharefs_add_entry(struct dentry *parent, const char *name, struct inode *inode)
{
	struct dentry *dentry = d_alloc_name(parent, name);

	if (!dentry) {
		iput(inode);
		return -ENOMEM;
	}
	d_make_persistent(dentry, inode);
	dput(dentry);
	return 0;
}

static int msharefs_fill_devices(struct super_block *sb)
{
	struct inode *dir = msharefs_new_inode(sb, S_IFDIR | 0755);
	struct dentry *dentry;
	int i, err = 0;

	if (!dir)
		return -ENOMEM;
	dir->i_op = &simple_dir_inode_operations;
	dir->i_fop = &simple_dir_operations;
	set_nlink(dir, 2);
	dentry = d_alloc_name(sb->s_root, "ivshmem");
	if (!dentry) {
		iput(dir);
		return -ENOMEM;
	}
	d_make_persistent(dentry, dir);
	inc_nlink(d_inode(sb->s_root));

	mutex_lock(&msharefs_devices_lock);
	for (i = 0; i < MSHAREFS_MAX_DEVICES && !err; i++) {
		struct msharefs_device *dev = &msharefs_devices[i];
		struct inode *inode;

		if (!dev->region)
			continue;
		inode = msharefs_new_inode(sb, S_IFREG | (dev->read_only ? 0400 : 0600));
		if (!inode) {
			err = -ENOMEM;
			break;
		}
		inode->i_op = &msharefs_region_iops;
		inode->i_fop = &msharefs_device_fops;
		/* The inode holds a reference: the region outlives an unbind while it is open. */
		err = mshare_device_region_attach(dev->region, inode);
		if (err) {
			iput(inode);
			break;
		}
		inode->i_private = dev->region;
		i_size_write(inode, dev->size);
		err = msharefs_add_entry(dentry, dev->name, inode);
	}
	mutex_unlock(&msharefs_devices_lock);
	dput(dentry);
	return err;
}

static int msharefs_fill_super(struct super_block *sb, struct fs_context *fc)
{
	static const struct tree_descr files[] = {
		[2] = { "mshare_info", &msharefs_info_fops, 0444 },
		[3] = { "mshare_stats", &msharefs_stats_fops, 0444 },
		{ "" },
	};
	int err = simple_fill_super(sb, MSHAREFS_MAGIC, files);

	if (err)
		return err;
	sb->s_op = &msharefs_sops;
	/* Regions hold data, not code: PROT_EXEC is EPERM, as on a noexec mount. */
	sb->s_iflags |= SB_I_NOEXEC;
	d_inode(sb->s_root)->i_mode = S_IFDIR | 01777;
	d_inode(sb->s_root)->i_op = &msharefs_dir_iops;
	return msharefs_fill_devices(sb);
}

/*
 * Mount options: the API, "api=v1" (the January 2025 series, the default) or "api=v3" (the
 * v2/v3 series, whose request numbers collide with v1's), which picks the instance (every
 * mount of one API shows the same regions); and the instance's limits, "size=" (bytes of
 * memory its named regions may hold, K/M/G suffixes) and "nr_regions=" (0: no limit),
 * which a remount may change.
 */
enum { Opt_api, Opt_size, Opt_nr_regions };

static const struct constant_table msharefs_api_names[] = {
	{ "v1", 0 },
	{ "v3", 1 },
	{}
};

static const struct fs_parameter_spec msharefs_parameters[] = {
	fsparam_enum("api", Opt_api, msharefs_api_names),
	fsparam_string("size", Opt_size),
	fsparam_u32("nr_regions", Opt_nr_regions),
	{}
};

/* What a mount or remount asks for. */
struct msharefs_context {
	struct msharefs_instance *instance;
	u64 max_bytes;
	unsigned int max_regions;
	bool set_bytes;
	bool set_regions;
};

static int msharefs_parse_param(struct fs_context *fc, struct fs_parameter *param)
{
	struct msharefs_context *ctx = fc->fs_private;
	struct msharefs_instance *instance;
	struct fs_parse_result result;
	int opt = fs_parse(fc, msharefs_parameters, param, &result);
	char *rest;

	if (opt < 0)
		return opt;
	switch (opt) {
	case Opt_api:
		instance = &msharefs_instances[result.uint_32];
		/* The API is the instance's: a remount cannot change it (mount another instance). */
		if (fc->purpose == FS_CONTEXT_FOR_RECONFIGURE && ctx->instance != instance)
			return invalfc(fc, "api= cannot change on remount; mount msharefs with -o api=v%d elsewhere",
				       instance->api);
		ctx->instance = instance;
		return 0;
	case Opt_size:
		ctx->max_bytes = memparse(param->string, &rest);
		if (*rest)
			return invalfc(fc, "size=%s: give bytes, with K, M or G if you like (0: no limit)",
				       param->string);
		ctx->set_bytes = true;
		return 0;
	case Opt_nr_regions:
		ctx->max_regions = result.uint_32;
		ctx->set_regions = true;
		return 0;
	}
	return -EINVAL;
}

/* Sets the limits asked for; a limit below what is in use already is refused, as tmpfs's. */
static int msharefs_apply_limits(struct fs_context *fc)
{
	struct msharefs_context *ctx = fc->fs_private;
	struct msharefs_instance *in = ctx->instance;

	if (ctx->set_bytes && ctx->max_bytes && ctx->max_bytes < atomic64_read(&in->bytes))
		return invalfc(fc, "size=%llu is below the %lld bytes the regions hold", ctx->max_bytes,
			       (long long)atomic64_read(&in->bytes));
	if (ctx->set_regions && ctx->max_regions && ctx->max_regions < atomic_read(&in->regions))
		return invalfc(fc, "nr_regions=%u is below the %d regions there are", ctx->max_regions,
			       atomic_read(&in->regions));
	if (ctx->set_bytes)
		WRITE_ONCE(in->max_bytes, ctx->max_bytes);
	if (ctx->set_regions)
		WRITE_ONCE(in->max_regions, ctx->max_regions);
	return 0;
}

static int msharefs_fill_super_limited(struct super_block *sb, struct fs_context *fc)
{
	struct msharefs_instance *in = sb->s_fs_info;

	/* A new superblock: limits of an earlier one (all its mounts gone) do not carry over. */
	WRITE_ONCE(in->max_bytes, 0);
	WRITE_ONCE(in->max_regions, 0);
	return msharefs_fill_super(sb, fc);
}

static int msharefs_get_tree(struct fs_context *fc)
{
	struct msharefs_context *ctx = fc->fs_private;
	int err = get_tree_keyed(fc, msharefs_fill_super_limited, ctx->instance);

	return err ?: msharefs_apply_limits(fc);
}

static int msharefs_reconfigure(struct fs_context *fc)
{
	return msharefs_apply_limits(fc);
}

static void msharefs_free_fc(struct fs_context *fc)
{
	kfree(fc->fs_private);
}

static const struct fs_context_operations msharefs_context_ops = {
	.free		= msharefs_free_fc,
	.parse_param	= msharefs_parse_param,
	.get_tree	= msharefs_get_tree,
	.reconfigure	= msharefs_reconfigure,
};

static int msharefs_init_fs_context(struct fs_context *fc)
{
	struct msharefs_context *ctx = kzalloc(sizeof(*ctx), GFP_KERNEL);

	if (!ctx)
		return -ENOMEM;
	ctx->instance = fc->purpose == FS_CONTEXT_FOR_RECONFIGURE ? fc->root->d_sb->s_fs_info :
								    &msharefs_instances[0];
	fc->fs_private = ctx;
	fc->ops = &msharefs_context_ops;
	return 0;
}

static struct file_system_type msharefs_type = {
	.owner			= THIS_MODULE,
	.name			= "msharefs",
	.init_fs_context	= msharefs_init_fs_context,
	.parameters		= msharefs_parameters,
	.kill_sb		= kill_anon_super,
};

int msharefs_register(void)
{
	int err = sysfs_create_mount_point(fs_kobj, "mshare");

	if (err)
		return err;
	err = register_filesystem(&msharefs_type);
	if (err)
		sysfs_remove_mount_point(fs_kobj, "mshare");
	return err;
}

void msharefs_unregister(void)
{
	unregister_filesystem(&msharefs_type);
	sysfs_remove_mount_point(fs_kobj, "mshare");
}
