// SPDX-License-Identifier: GPL-2.0
/*
 * Region files: the file and inode operations of a region (read, write, ioctl, mmap and
 * where a window goes, fallocate, truncate), each handing the call to Rust (msharefs.rs,
 * window.rs), which holds every rule; and the core's searches for free address space that
 * Rust's placement of a window calls.
 */
#include <linux/fs.h>
#include <linux/falloc.h>
#include <linux/mm.h>
#include <linux/huge_mm.h>
#include <linux/mman.h>
#include <linux/module.h>
#include <linux/pagemap.h>
#include <linux/sizes.h>

#include "glue.h"
#include "msharefs.h"

/* The end of user address space, which a region's fixed start must leave it below. */
unsigned long msharefs_user_end(void)
{
	return TASK_SIZE_MAX;
}

/* Called from Rust once a region's size is set. */
void msharefs_inode_set_size(struct inode *inode, loff_t size)
{
	i_size_write(inode, size);
}

/* Rust checks the window and sets it up (window.rs), with msharefs_vma_set_*(). */
static int msharefs_mmap(struct file *file, struct vm_area_struct *vma)
{
	return mshare_region_mmap(file_inode(file)->i_private, vma);
}

static long msharefs_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct inode *inode = file_inode(file);

	return mshare_region_ioctl(inode->i_private, inode, msharefs_api(inode), cmd, arg,
				   file->f_mode & FMODE_WRITE);
}

/* Rust aligns whole-GiB windows to its GiB (PMD_TABLE_REACH): a PUD entry's reach. */
static_assert(PUD_SIZE == SZ_1G);

/*
 * The core's searches for room for a window, which Rust's placement (window.rs) chooses
 * among: called from get_unmapped_area, with the mmap lock held, so the room found stays
 * free until the window is mapped.
 */
unsigned long msharefs_task_size(void)
{
	return TASK_SIZE;
}

/* The first fit for @len bytes of @file, anywhere. */
unsigned long msharefs_first_fit_area(struct file *file, unsigned long len, unsigned long pgoff,
				      unsigned long flags)
{
	return mm_get_unmapped_area(file, 0, len, pgoff, flags);
}

/* Where THP would put @len bytes of @file (near @addr unless 0). */
unsigned long msharefs_thp_area(struct file *file, unsigned long addr, unsigned long len,
				unsigned long pgoff, unsigned long flags)
{
	return thp_get_unmapped_area(file, addr, len, pgoff, flags);
}

/* Whether the caller maps nothing in [start, start + len). */
bool msharefs_range_free(unsigned long start, unsigned long len)
{
	return !find_vma_intersection(current->mm, start, start + len);
}

/*
 * Where a window goes, decided before mmap unmaps anything of the caller's (a refused
 * MAP_FIXED must not have cleared the caller's mapping at addr): Rust's, all of it.
 */
static unsigned long msharefs_get_unmapped_area(struct file *file, unsigned long addr,
						unsigned long len, unsigned long pgoff,
						unsigned long flags)
{
	struct inode *inode = file_inode(file);

	return mshare_window_place(inode->i_private, msharefs_api(inode), file, addr, len, pgoff,
				   flags, flags & MAP_FIXED, (flags & MAP_TYPE) != MAP_PRIVATE);
}

static ssize_t msharefs_read(struct file *file, char __user *buf, size_t len, loff_t *pos)
{
	struct inode *inode = file_inode(file);

	return mshare_region_read(inode->i_private, buf, len, pos);
}

static ssize_t msharefs_write(struct file *file, const char __user *buf, size_t len, loff_t *pos)
{
	struct inode *inode = file_inode(file);

	return mshare_region_write(inode->i_private, buf, len, pos);
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

/*
 * Named and unnamed regions' files, and device regions' (shared with the driver, which may
 * unbind): the same operations, two tables, so that a file tells which kind it is.
 */
#define MSHAREFS_REGION_FILE_OPERATIONS				\
	.owner		= THIS_MODULE,				\
	.open		= simple_open,				\
	.read		= msharefs_read,			\
	.write		= msharefs_write,			\
	.llseek		= generic_file_llseek,			\
	.fsync		= noop_fsync,				\
	.unlocked_ioctl	= msharefs_ioctl,			\
	.mmap		= msharefs_mmap,			\
	.get_unmapped_area = msharefs_get_unmapped_area,	\
	.fallocate	= msharefs_fallocate

const struct file_operations msharefs_region_fops = { MSHAREFS_REGION_FILE_OPERATIONS };
const struct file_operations msharefs_device_fops = { MSHAREFS_REGION_FILE_OPERATIONS };

/*
 * A region's folios carry its inode's mapping (see msharefs_alloc_chunk()); GUP unpins and
 * zaps mark them dirty through it. Nothing is ever written back: the memory is the truth.
 */
static const struct address_space_operations msharefs_region_aops = {
	.dirty_folio	= noop_dirty_folio,
};

/* An inode that shows a region of folios (msharefs files, /dev/mshare regions). */
void msharefs_region_mapping_init(struct inode *inode)
{
	inode->i_mapping->a_ops = &msharefs_region_aops;
	mapping_set_unevictable(inode->i_mapping);
}

const struct inode_operations msharefs_region_iops = {
	.setattr	= msharefs_setattr,
	.getattr	= simple_getattr,
};

/* Regions with no name (/dev/mshare MSHARE_CREATE): they pin msharefs while they live. */
const struct inode_operations msharefs_anonymous_iops = {
	.setattr	= msharefs_setattr,
	.getattr	= simple_getattr,
};

/* The region behind an msharefs file, or NULL for any other file. */
struct mshare_region *msharefs_file_region(struct file *file)
{
	if (file->f_op != &msharefs_region_fops && file->f_op != &msharefs_device_fops)
		return NULL;
	return file_inode(file)->i_private;
}
