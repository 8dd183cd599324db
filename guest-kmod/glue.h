/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the C glue files share among themselves (the boundary with Rust is msharefs.h):
 * the msharefs instance and the operation tables one file defines and another installs.
 */
#ifndef MSHARE_GLUE_H
#define MSHARE_GLUE_H

#include <linux/fs.h>
#include <linux/mm.h>

#include "include/uapi/mshare.h"	/* MSHAREFS_MAGIC */

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

/* The API a mount speaks (api=v1|v3), which gives the ioctl numbers their meaning. */
static inline int msharefs_api(struct inode *inode)
{
	return ((struct msharefs_instance *)inode->i_sb->s_fs_info)->api;
}

/* fs_glue.c: the filesystem, its mounts and their limits */
extern struct file_system_type msharefs_type;
struct msharefs_instance *msharefs_limited(struct inode *inode);
bool msharefs_charge_bytes(struct msharefs_instance *in, u64 bytes);
void msharefs_uncharge_bytes(struct msharefs_instance *in, u64 bytes);
struct inode *msharefs_new_inode(struct super_block *sb, umode_t mode);
int msharefs_add_entry(struct dentry *parent, const char *name, struct inode *inode);

/* file_glue.c: region files and their inodes */
extern const struct file_operations msharefs_region_fops;
extern const struct file_operations msharefs_device_fops;
extern const struct inode_operations msharefs_region_iops;
extern const struct inode_operations msharefs_anonymous_iops;
void msharefs_region_mapping_init(struct inode *inode);

/* window_glue.c: how a window is mapped, one family of operations per kind */
extern const struct vm_operations_struct msharefs_vm_ops;
extern const struct vm_operations_struct msharefs_page_vm_ops;
#ifdef CONFIG_SHARED_PGTABLE
extern const struct vm_operations_struct msharefs_shared_vm_ops;
extern const struct vm_operations_struct msharefs_shared_pmd_vm_ops;
#endif

/* devices_glue.c: the ivshmem devices a mount shows */
int msharefs_fill_devices(struct super_block *sb);

#endif /* MSHARE_GLUE_H */
