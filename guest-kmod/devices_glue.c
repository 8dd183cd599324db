// SPDX-License-Identifier: GPL-2.0
/*
 * The ivshmem devices' regions every mount shows as /sys/fs/mshare/ivshmem/<name>: the
 * directory and each entry's inode. Which devices there are, and each one's name and file
 * mode, are Rust's (devices.rs).
 */
#include <linux/dcache.h>
#include <linux/fs.h>

#include "glue.h"
#include "msharefs.h"

/*
 * An entry @name under @dir for a device's @region: a region inode that holds its own
 * reference to the region (the table's, Rust's devices.rs, which calls this under its
 * lock, keeps it alive until then).
 */
int msharefs_show_device(struct dentry *dir, const char *name, struct mshare_region *region,
			 loff_t size, umode_t mode)
{
	struct inode *inode = msharefs_new_inode(dir->d_sb, S_IFREG | mode);
	int err;

	if (!inode)
		return -ENOMEM;
	inode->i_op = &msharefs_region_iops;
	inode->i_fop = &msharefs_device_fops;
	/* The inode holds a reference: the region outlives an unbind while it is open. */
	err = mshare_device_region_attach(region, inode);
	if (err) {
		iput(inode);
		return err;
	}
	inode->i_private = region;
	i_size_write(inode, size);
	return msharefs_add_entry(dir, name, inode);
}

int msharefs_fill_devices(struct super_block *sb)
{
	struct inode *dir = msharefs_new_inode(sb, S_IFDIR | 0755);
	struct dentry *dentry;
	int err;

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
	err = mshare_devices_show(dentry);
	dput(dentry);
	return err;
}
