/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The boundary between mshare's Rust (msharefs.rs, window.rs, ...) and its C glue
 * (*_glue.c): every call either way. Pointers are typed: the C structs Rust gets from the
 * VFS and the core and only hands back, and struct mshare_region and struct
 * msharefs_instance, Rust's, opaque to C.
 */
#ifndef MSHARE_MSHAREFS_H
#define MSHARE_MSHAREFS_H

#include <linux/mm_types.h>
#include <linux/types.h>

struct dentry;
struct file;
struct folio;
struct inode;
struct ptdesc;
struct vm_fault;

/* A region, owned by Rust (region.rs): C only passes it back. */
struct mshare_region;

/*
 * An msharefs instance, one per API (every mount of one API shows the same regions): the
 * key of its superblock and its s_fs_info. Owned by Rust (limits.rs, with its limits, which
 * bound the regions made by name in it and their memory): C only passes it back.
 */
struct msharefs_instance;

/* What mshare_instance_set_limits() did: set them, or refused one below what is in use. */
enum mshare_limits {
	MSHARE_LIMITS_SET = 0,
	MSHARE_LIMITS_REFUSED_SIZE = 1,
	MSHARE_LIMITS_REFUSED_NR_REGIONS = 2,
};

/* Which operations serve a window (window.rs's WindowOps; window_glue.c's tables). */
enum mshare_window_ops {
	MSHARE_WINDOW_DEVICE = 0,	/* mode C, a device's page frames */
	MSHARE_WINDOW_PAGES = 1,	/* mode C, a region's own pages */
	MSHARE_WINDOW_SHARED = 2,	/* mode B, shared PTE tables */
	MSHARE_WINDOW_SHARED_PMD = 3,	/* mode B, shared PMD tables */
};

/* How a fault maps the page frame Rust found for it (window_glue.c has one per kind). */
typedef vm_fault_t (*mshare_fault_map_fn)(struct vm_fault *vmf, unsigned long pfn, bool writable);

/* Rust: a region per msharefs file. */
struct mshare_region *mshare_region_new(struct inode *inode);
void mshare_region_release(struct mshare_region *region, struct inode *inode);
long mshare_region_ioctl(struct mshare_region *region, struct inode *inode, int api,
			 unsigned int cmd, unsigned long arg, bool writable);
int mshare_region_truncate(struct mshare_region *region, struct inode *inode, loff_t size,
			   bool from_open);
long mshare_region_fallocate(struct mshare_region *region, struct inode *inode, int mode,
			     loff_t offset, loff_t len);
ssize_t mshare_region_read(struct mshare_region *region, char __user *buf, size_t len,
			   loff_t *pos);
ssize_t mshare_region_write(struct mshare_region *region, const char __user *buf, size_t len,
			    loff_t *pos);
/*
 * get_unmapped_area of a region file: where a window goes, or -errno, decided before mmap
 * unmaps anything (Rust calls the msharefs_*_area() primitives below to find room).
 */
unsigned long mshare_window_place(struct mshare_region *region, int api, struct file *file,
				  unsigned long addr, unsigned long len, unsigned long pgoff,
				  unsigned long flags, bool fixed, bool shared);
ssize_t mshare_info_read(char __user *buf, size_t len, loff_t *pos);
ssize_t mshare_stats_read(char __user *buf, size_t len, loff_t *pos);
/* mmap of a region file: Rust checks the window and sets it up; 0 or -errno. */
int mshare_region_mmap(struct mshare_region *region, struct vm_area_struct *vma);
bool mshare_region_writable(struct mshare_region *region);
/* A fault of a window with mappings of its own: Rust looks up, then calls map; at the PMD
 * level (leaf), only a chunk, else VM_FAULT_FALLBACK. */
vm_fault_t mshare_region_fault(struct mshare_region *region, struct vm_fault *vmf,
			       unsigned long pgoff, bool write, bool leaf, mshare_fault_map_fn map);
/* A write to a read-only entry of such a window: SIGSEGV, retry, or the page locked. */
vm_fault_t mshare_region_page_mkwrite(struct mshare_region *region, unsigned long pgoff,
				      unsigned long pfn);
/* A fault of a window sharing tables that found no entry: retry, SIGSEGV or SIGBUS. */
vm_fault_t mshare_region_shared_fault(struct mshare_region *region, unsigned long pgoff);
int mshare_region_table(struct mshare_region *region, unsigned long pgoff,
			struct ptdesc **table);
int mshare_region_pmd_table(struct mshare_region *region, unsigned long pgoff,
			    struct ptdesc **table);
void mshare_region_window_opened(struct mshare_region *region, bool shared);
void mshare_region_window_closed(struct mshare_region *region, bool shared);
int mshare_device_region_attach(struct mshare_region *region, struct inode *inode);
/* Rust: an entry under a mount's ivshmem directory for each device of the table. */
int mshare_devices_show(struct dentry *dir);
/* Rust: the mshare system calls (calls.rs), which syscalls_glue.c registers with the core. */
long mshare_call_create(unsigned int flags);
long mshare_call_attach(int fd, unsigned long offset, unsigned long size, unsigned long addr,
			unsigned int flags);
long mshare_call_detach(unsigned long addr, unsigned long size);
long mshare_call_map(int fd, unsigned long offset, unsigned long size, unsigned int prot,
		     unsigned int flags, int object_fd);
long mshare_call_unmap(int fd, unsigned long offset, unsigned long size);
long mshare_call_protect(int fd, unsigned long offset, unsigned long size, unsigned int prot);
long mshare_call_advise(int fd, unsigned long offset, unsigned long size, int advice);
/* Rust: the instances (api 1 or 3) and their limits (0: none). */
struct msharefs_instance *mshare_instance(int api);
int mshare_instance_api(struct msharefs_instance *instance);
bool mshare_instance_charge_bytes(struct msharefs_instance *instance, u64 bytes);
void mshare_instance_uncharge_bytes(struct msharefs_instance *instance, u64 bytes);
bool mshare_instance_charge_region(struct msharefs_instance *instance);
void mshare_instance_uncharge_region(struct msharefs_instance *instance);
u64 mshare_instance_max_bytes(struct msharefs_instance *instance);
unsigned int mshare_instance_max_regions(struct msharefs_instance *instance);
/* Sets the limits not NULL; on a refusal, what is in use in *in_use. */
enum mshare_limits mshare_instance_set_limits(struct msharefs_instance *instance,
					      const u64 *size, const unsigned int *nr_regions,
					      u64 *in_use);
void mshare_instance_clear_limits(struct msharefs_instance *instance);

/* C glue, called from Rust. */
int msharefs_register(void);
void msharefs_unregister(void);
void msharefs_inode_set_size(struct inode *inode, loff_t size);
unsigned long msharefs_user_end(void);
/* Where the core would put a window (get_unmapped_area's primitives, for mshare_window_place). */
unsigned long msharefs_task_size(void);
unsigned long msharefs_first_fit_area(struct file *file, unsigned long len, unsigned long pgoff,
				      unsigned long flags);
unsigned long msharefs_thp_area(struct file *file, unsigned long addr, unsigned long len,
				unsigned long pgoff, unsigned long flags);
bool msharefs_range_free(unsigned long start, unsigned long len);
/* Setting up a window Rust checked (window_glue.c). */
void msharefs_vma_set_pfnmap(struct vm_area_struct *vma);
int msharefs_vma_set_ops(struct vm_area_struct *vma, enum mshare_window_ops ops,
			 struct mshare_region *region);
long msharefs_alloc_chunk(unsigned int order, struct inode *inode, unsigned long index);
void msharefs_free_chunk(unsigned long pfn);
void msharefs_zap(struct inode *inode, loff_t offset, loff_t len);
void *msharefs_page_address(unsigned long pfn);
int msharefs_file_get(int fd, struct file **file);
void msharefs_file_put(struct file *file);
long msharefs_file_pin(struct file *file, loff_t offset, unsigned long *frames,
		       struct folio **folios);
void msharefs_file_unpin(struct folio **folios, unsigned int nr);
void msharefs_folio_settle(unsigned long pfn);
void msharefs_page_lock(unsigned long pfn);
void msharefs_page_unlock(unsigned long pfn);
void msharefs_folios_settle(struct folio **folios, unsigned int nr);
bool mshare_kernel_shares_tables(void);
struct ptdesc *mshare_table_alloc(void);
void mshare_table_free(struct ptdesc *table);
void mshare_table_map(struct ptdesc *table, unsigned long first, const unsigned long *each,
		      bool writable, bool special);
unsigned long mshare_table_entry(struct ptdesc *table, unsigned int index, bool *writable);
void mshare_table_hold_links(struct ptdesc *table);
void mshare_table_set_mapped(struct ptdesc *table, unsigned int pages);
unsigned int mshare_table_sharers(struct ptdesc *table);
struct ptdesc *mshare_pmd_table_alloc(void);
void mshare_pmd_table_set(struct ptdesc *table, unsigned int index, unsigned long leaf,
			  struct ptdesc *pte_table, bool writable, bool special);
int mshare_pmd_table_entry(struct ptdesc *table, unsigned int index, unsigned long *pfn,
			   bool *writable);
struct file *msharefs_new_anonymous_file(void);
struct mshare_region *msharefs_file_region(struct file *file);
/* An entry under a mount's ivshmem directory for a device region (devices_glue.c). */
int msharefs_show_device(struct dentry *dir, const char *name, struct mshare_region *region,
			 loff_t size, umode_t mode);
/* The system calls answered by Rust's mshare_call_*() (syscalls_glue.c): 0, -EBUSY if
 * another driver answers them; 0 and nothing done on a kernel without them. */
int msharefs_syscalls_register(void);
void msharefs_syscalls_unregister(void);
bool msharefs_kernel_has_syscalls(void);
/* kunit_glue.c */
void mshare_kunit_mark_skipped(const char *reason);

#endif /* MSHARE_MSHAREFS_H */
