// SPDX-License-Identifier: GPL-2.0
/*
 * The ivshmem devices' regions, registered by the PCI driver (ivshmem.rs) and shown by
 * every mount as /sys/fs/mshare/ivshmem/<name>.
 */
#include <linux/dcache.h>
#include <linux/fs.h>
#include <linux/mutex.h>
#include <linux/string.h>

#include "glue.h"
#include "msharefs.h"

/*
 * ivshmem regions, registered by the PCI driver before msharefs is mounted: they appear
 * as /sys/fs/mshare/ivshmem/<name>, backed by the device, with no creator. The table
 * borrows the driver's reference: a region leaves it (msharefs_remove_device, under the
 * lock) before the driver lets go, and each inode made from it takes its own.
 */
#define MSHAREFS_MAX_DEVICES 32

static struct msharefs_device {
	char name[NAME_MAX + 1];
	struct mshare_region *region;
	loff_t size;
	bool read_only;
} msharefs_devices[MSHAREFS_MAX_DEVICES];
static DEFINE_MUTEX(msharefs_devices_lock);

int msharefs_add_device(const char *name, struct mshare_region *region, loff_t size, bool read_only)
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

void msharefs_remove_device(struct mshare_region *region)
{
	int i;

	guard(mutex)(&msharefs_devices_lock);
	for (i = 0; i < MSHAREFS_MAX_DEVICES; i++)
		if (msharefs_devices[i].region == region)
			msharefs_devices[i].region = NULL;
}

/* An entry under @dir for each device of the table: a region inode that holds the region. */
static int msharefs_add_devices(struct dentry *dir)
{
	int i, err;

	/* The table's lock keeps each region alive until its inode holds a reference. */
	guard(mutex)(&msharefs_devices_lock);
	for (i = 0; i < MSHAREFS_MAX_DEVICES; i++) {
		struct msharefs_device *dev = &msharefs_devices[i];
		struct inode *inode;

		if (!dev->region)
			continue;
		inode = msharefs_new_inode(dir->d_sb, S_IFREG | (dev->read_only ? 0400 : 0600));
		if (!inode)
			return -ENOMEM;
		inode->i_op = &msharefs_region_iops;
		inode->i_fop = &msharefs_device_fops;
		/* The inode holds a reference: the region outlives an unbind while it is open. */
		err = mshare_device_region_attach(dev->region, inode);
		if (err) {
			iput(inode);
			return err;
		}
		inode->i_private = dev->region;
		i_size_write(inode, dev->size);
		err = msharefs_add_entry(dir, dev->name, inode);
		if (err)
			return err;
	}
	return 0;
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
	err = msharefs_add_devices(dentry);
	dput(dentry);
	return err;
}
