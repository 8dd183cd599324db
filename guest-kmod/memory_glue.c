// SPDX-License-Identifier: GPL-2.0
/*
 * A region's memory, the parts Rust cannot allocate or pin itself: the module's own 2 MiB
 * chunks (folios carrying the region file's mapping, charged to the memory cgroup and to
 * the mount's size= limit, whose rules are limits.rs's) and the pinned pages of a shmem
 * file inside a region. Which granule gets which memory, and when it is freed, is Rust's
 * (granule.rs, file_pages.rs).
 */
#include <linux/fcntl.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/gfp.h>
#include <linux/memfd.h>
#include <linux/mm.h>
#include <linux/pagemap.h>
#include <linux/shmem_fs.h>

#include "glue.h"
#include "msharefs.h"

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
long msharefs_alloc_chunk(unsigned int order, struct inode *inode, unsigned long index)
{
	struct msharefs_instance *limited = msharefs_limited(inode);
	struct folio *folio;

	if (limited && !mshare_instance_charge_bytes(limited, PAGE_SIZE << order))
		return -ENOSPC;
	folio = folio_alloc(GFP_KERNEL_ACCOUNT | __GFP_ZERO | __GFP_NOWARN, order);
	if (!folio) {
		if (limited)
			mshare_instance_uncharge_bytes(limited, PAGE_SIZE << order);
		return -ENOMEM;
	}
	if (inode) {
		folio->mapping = inode->i_mapping;
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
		mshare_instance_uncharge_bytes(limited, folio_size(folio));
	folio->private = NULL;
	WRITE_ONCE(folio->mapping, NULL);
	folio_put(folio);
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
int msharefs_file_get(int fd, struct file **out)
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

void msharefs_file_put(struct file *file)
{
	mapping_unmap_writable(file->f_mapping);
	fput(file);
}

/*
 * Pins the 2 MiB of @file at @offset (allocating pages where the file has none): each
 * page's frame in @frames (PTRS_PER_PTE), the folios pinned in @folios (as many); returns
 * their number, or -errno (EINVAL past the end of the file).
 */
long msharefs_file_pin(struct file *file, loff_t offset, unsigned long *frames,
		       struct folio **pinned)
{
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

void msharefs_file_unpin(struct folio **pinned, unsigned int nr)
{
	unsigned int i;

	/*
	 * Processes wrote the folios through the region's tables, whose dirty bits the
	 * core never reads: unpinned clean, a shmem folio could be dropped with its data.
	 */
	for (i = 0; i < nr; i++)
		folio_mark_dirty_lock(pinned[i]);
	unpin_folios(pinned, nr);
}


/*
 * UNMAP took these folios from their region, or SET_PROT changed its protection: wait for
 * any fault (or page_mkwrite) that found one and is mapping it (it holds the folio locked
 * until the mapping exists).
 */
void msharefs_folios_settle(struct folio **folios, unsigned int nr)
{
	unsigned int i;

	for (i = 0; i < nr; i++) {
		folio_lock(folios[i]);
		folio_unlock(folios[i]);
	}
}

/* The same for a chunk: one folio from @pfn on. */
void msharefs_folio_settle(unsigned long pfn)
{
	struct folio *folio = pfn_folio(pfn);

	msharefs_folios_settle(&folio, 1);
}

/* Locks the folio of page frame @pfn, which the caller holds a reference on. */
void msharefs_page_lock(unsigned long pfn)
{
	folio_lock(pfn_folio(pfn));
}

/* KUnit's stand-in for the core's unlock after a fault. */
void msharefs_page_unlock(unsigned long pfn)
{
	folio_unlock(pfn_folio(pfn));
}
