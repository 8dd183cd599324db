/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The calls between msharefs_glue.c and the Rust side of mshare (msharefs.rs).
 * Inodes cross as opaque pointers; Rust only hands them back to the glue.
 */
#ifndef MSHARE_MSHAREFS_H
#define MSHARE_MSHAREFS_H

#include <linux/types.h>

struct file;
struct inode;

/* Rust: a region per msharefs file. */
void *mshare_region_new(void *inode);
void mshare_region_release(void *region, void *inode);
long mshare_region_ioctl(void *region, void *inode, int api, unsigned int cmd, unsigned long arg,
			 bool writable);
int mshare_region_truncate(void *region, void *inode, loff_t size, bool from_open);
long mshare_region_fallocate(void *region, void *inode, int mode, loff_t offset, loff_t len);
ssize_t mshare_region_read(void *region, void *inode, char __user *buf, size_t len, loff_t *pos);
ssize_t mshare_region_write(void *region, void *inode, const char __user *buf, size_t len,
			    loff_t *pos);
/* Where a window goes (v1 start + offset), 0 for anywhere, or -errno; before any unmap. */
long mshare_region_place(void *region, int api, unsigned long addr, unsigned long len,
			 unsigned long pgoff, bool fixed, bool shared);
/* Where in the free [found, found + len + 1 GiB) a window goes: across the fewest GiBs. */
unsigned long mshare_window_address(unsigned long found, unsigned long len);
ssize_t mshare_info_read(char __user *buf, size_t len, loff_t *pos);
ssize_t mshare_stats_read(char __user *buf, size_t len, loff_t *pos);
/*
 * 1: the window shares the region's PTE tables (mode B); 2: its PMD tables too (mode B, a
 * window of whole, aligned GiBs); 0: its own mappings; or -errno.
 */
int mshare_region_mmap_check(void *region, unsigned long start, unsigned long end,
			     unsigned long pgoff, bool shared, bool writable);
bool mshare_region_writable(void *region);
bool mshare_region_has_pages(void *region);
long mshare_region_pfn(void *region, unsigned long pgoff);
void mshare_region_fault_mapped(void *region);
int mshare_region_table(void *region, unsigned long pgoff, void **table);
int mshare_region_pmd_table(void *region, unsigned long pgoff, void **table);
void mshare_region_window_opened(void *region, bool shared);
void mshare_region_window_closed(void *region, bool shared);
int mshare_device_region_attach(void *region, void *inode);

/* C glue, called from Rust. */
int msharefs_register(void);
void msharefs_unregister(void);
void msharefs_inode_set_size(void *inode, loff_t size);
unsigned long msharefs_user_end(void);
long msharefs_alloc_chunk(unsigned int order, void *inode, unsigned long index);
void msharefs_free_chunk(unsigned long pfn);
void msharefs_invalidate_lock(void *inode);
void msharefs_invalidate_unlock(void *inode);
void msharefs_zap(void *inode, loff_t offset, loff_t len);
void msharefs_invalidate_lock_shared(void *inode);
void msharefs_invalidate_unlock_shared(void *inode);
void *msharefs_page_address(unsigned long pfn);
int msharefs_file_get(int fd, void **file);
void msharefs_file_put(void *file);
long msharefs_file_pin(void *file, loff_t offset, unsigned long *frames, void **folios);
void msharefs_file_unpin(void **folios, unsigned int nr);
void msharefs_folio_settle(unsigned long pfn);
bool mshare_kernel_shares_tables(void);
void *mshare_table_alloc(void);
void mshare_table_free(void *table);
void mshare_table_grace_period(void);
void mshare_table_map(void *table, unsigned long first, const unsigned long *each, bool writable,
		      bool special);
unsigned long mshare_table_entry(void *table, unsigned int index, bool *writable);
void *mshare_pmd_table_alloc(void);
void mshare_pmd_table_set(void *table, unsigned int index, unsigned long leaf, void *pte_table,
			  bool writable, bool special);
int mshare_pmd_table_entry(void *table, unsigned int index, unsigned long *pfn, bool *writable);
struct file *msharefs_new_anonymous_file(void);
void *msharefs_file_region(struct file *file, void **inode);
int msharefs_detach(unsigned long addr, unsigned long size);
int msharefs_add_device(const char *name, void *region, loff_t size, bool read_only);
void msharefs_remove_device(void *region);
/* kunit_glue.c */
void mshare_kunit_mark_skipped(const char *reason);

#endif /* MSHARE_MSHAREFS_H */
