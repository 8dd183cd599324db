/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the C glue files share among themselves (the boundary with Rust is msharefs.h):
 * the operation tables one file defines and another installs, and what a file's inode
 * tells of its mount.
 */
#ifndef MSHARE_GLUE_H
#define MSHARE_GLUE_H

#include <linux/fs.h>
#include <linux/mm.h>

#include "include/uapi/mshare.h"	/* MSHAREFS_MAGIC */
#include "msharefs.h"

/* The API a mount speaks (api=v1|v3), which gives the ioctl numbers their meaning. */
static inline int msharefs_api(struct inode *inode)
{
	return mshare_instance_api(inode->i_sb->s_fs_info);
}

/* fs_glue.c: the filesystem and its mounts (s_fs_info: the instance, Rust's) */
extern struct file_system_type msharefs_type;
struct msharefs_instance *msharefs_limited(struct inode *inode);
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
