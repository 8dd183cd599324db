/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR Apache-2.0 */
/*
 * mshare: memory regions whose page tables are shared by every process mapping them.
 *
 * Two interfaces to the same regions (docs/module.md in mshare-vmm):
 *
 * msharefs: regions are files under /sys/fs/mshare, with the ioctls of the posted series
 * in the API the mount speaks (mount -t msharefs -o api=v1|v3; /proc/mounts says which):
 *
 *   v1 (January 2025, the default mount):
 *   fd = open("/sys/fs/mshare/NAME", O_RDWR | O_CREAT | O_EXCL, 0600);
 *   ioctl(fd, MSHAREFS_SET_SIZE, &(struct mshare_info){ .start = TB(2), .size = size });
 *   ioctl(fd, MSHAREFS_CREATE_MAPPING, &(struct mshare_create){ .addr = TB(2), ... });
 *   p = mmap((void *)TB(2), size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
 *   (start 0: no fixed address; addr is then an offset into the region)
 *
 *   v3 (April/August 2025), with MSHAREFS_API_V3 defined before this header:
 *   ftruncate(fd, size);   or fallocate(fd, 0, 0, size); fstat gives the size
 *   ioctl(fd, MSHAREFS_CREATE_MAPPING, &(struct mshare_create){ .region_offset = 0, ...,
 *         .flags = MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, .fd = -1 });
 *   p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);   the whole region
 *
 * MSHAREFS_V1_* and MSHAREFS_V3_* name each API's requests whatever is defined; v3's
 * UNMAP and v1's SET_SIZE are the same number, which the mount tells apart. The granule
 * (alignment and size unit) is in /sys/fs/mshare/mshare_info, the mode and system-wide
 * counters in /sys/fs/mshare/mshare_stats.
 *
 * /dev/mshare, the calls of the 2026 syscall proposal as ioctls:
 *   fd = ioctl(dev, MSHARE_CREATE, O_CLOEXEC);   a region with no name
 *   ftruncate(fd, size);
 *   ioctl(dev, MSHARE_MAP, &(struct mshare_map){ .fd = fd, ... });
 *   ioctl(dev, MSHARE_ATTACH, &attach);          attach.addr: where it is mapped
 *   ioctl(dev, MSHARE_DETACH, &(struct mshare_detach){ attach.addr, attach.size });
 * Every /dev/mshare call that takes a region's fd also takes msharefs files.
 *
 * This header is the ABI's one definition (mshare-uapi/include/mshare.h links to it): the
 * module and the mshare-uapi crate take its numbers from gen_abi_rs.c, which also makes the
 * Rust compiler check their structures against the ones here.
 */
#ifndef MSHARE_H
#define MSHARE_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define MSHAREFS_MAGIC		0x4d534852
#define MSHAREFS_MOUNT		"/sys/fs/mshare"
#define MSHARE_DEVICE		"/dev/mshare"

/* msharefs (region files) */
struct mshare_info {
	__u64 start;
	__u64 size;
};

struct mshare_create {
	union {
		__u64 addr;		/* v1: address in [start, start + size), or offset */
		__u64 region_offset;	/* v3: offset of the memory in the region */
	};
	__u64 size;
	__u64 offset;		/* offset in fd's file: 0 */
	__u32 prot;		/* PROT_READ | PROT_WRITE */
	__u32 flags;		/* MAP_SHARED | MAP_ANONYMOUS [| MAP_FIXED: v3 needs it] */
	__u32 fd;		/* -1: anonymous memory */
};

struct mshare_unmap {
	union {
		__u64 addr;		/* v1: as in struct mshare_create */
		__u64 region_offset;	/* v3 */
	};
	__u64 size;
};

struct mshare_stats {
	__u64 windows;		/* mappings of the region, all processes */
	__u64 faults;		/* faults that mapped memory into one process (mode C) */
	__u64 backed;		/* bytes with memory */
	__u64 tables;		/* shared PTE tables, one page each (mode B) */
	__u64 links;		/* times a shared table was linked into a process */
	__u64 file_backed;	/* bytes that are a file's pages (CREATE_MAPPING with an fd) */
	__u64 pmd_tables;	/* shared PMD tables, one page each (mode B, whole-GiB windows) */
	__u64 pmd_links;	/* times a shared PMD table was linked into a process */
	__u64 huge_leaf_bytes;	/* bytes mapped by 2 MiB leaves in the shared PMD tables */
	__u64 links_now;	/* shared tables linked now, summed over processes (mode B) */
};

#define MSHAREFS_V1_GET_SIZE		_IOR('x', 0, struct mshare_info)
#define MSHAREFS_V1_SET_SIZE		_IOW('x', 1, struct mshare_info)
#define MSHAREFS_V1_CREATE_MAPPING	_IOW('x', 2, struct mshare_create)
#define MSHAREFS_V1_UNMAP		_IOW('x', 3, struct mshare_unmap)
#define MSHAREFS_V3_CREATE_MAPPING	_IOW('x', 0, struct mshare_create)
#define MSHAREFS_V3_UNMAP		_IOW('x', 1, struct mshare_unmap)

#ifdef MSHAREFS_API_V3
#define MSHAREFS_CREATE_MAPPING	MSHAREFS_V3_CREATE_MAPPING
#define MSHAREFS_UNMAP		MSHAREFS_V3_UNMAP
#else
#define MSHAREFS_GET_SIZE	MSHAREFS_V1_GET_SIZE
#define MSHAREFS_SET_SIZE	MSHAREFS_V1_SET_SIZE
#define MSHAREFS_CREATE_MAPPING	MSHAREFS_V1_CREATE_MAPPING
#define MSHAREFS_UNMAP		MSHAREFS_V1_UNMAP
#endif
/* This project's extensions, the same under both APIs. */
#define MSHAREFS_GET_STATS	_IOR('x', 0x10, struct mshare_stats)
/*
 * A request's number carries the size of its structure: programs built before
 * links_now ask with 72 bytes, and get the fields they know.
 */
#define MSHAREFS_GET_STATS_72	_IOR('x', 0x10, __u8[72])
#define MSHAREFS_SET_PROT	_IOW('x', 0x11, __u64)	/* PROT_READ [| PROT_WRITE] */

/* /dev/mshare */
#define MSHARE_ATTACH_READ_ONLY	1
#define MSHARE_ATTACH_FIXED	2	/* at addr exactly; EEXIST if taken */

struct mshare_attach {
	__s32 fd;
	__u32 flags;		/* MSHARE_ATTACH_* */
	__u64 offset;		/* of the window in the region */
	__u64 size;
	__u64 addr;		/* in: with MSHARE_ATTACH_FIXED; out: the window */
};

struct mshare_detach {
	__u64 addr;		/* a whole window */
	__u64 size;
};

struct mshare_map {
	__s32 fd;
	__u32 prot;		/* PROT_READ | PROT_WRITE */
	__u64 offset;
	__u64 size;
	__s32 object_fd;	/* -1: anonymous memory */
	__u32 flags;		/* 0, or MAP_SHARED | MAP_ANONYMOUS */
};

struct mshare_range {
	__s32 fd;
	__u32 pad;		/* 0 */
	__u64 offset;
	__u64 size;
};

struct mshare_protect {
	__s32 fd;
	__u32 prot;		/* PROT_READ [| PROT_WRITE] */
};

struct mshare_advise {
	__s32 fd;
	__s32 advice;		/* MADV_*: see mshare_advise() */
	__u64 offset;
	__u64 size;
};

#define MSHARE_CREATE		_IO('x', 0x20)	/* arg: 0 or O_CLOEXEC; returns an fd */
#define MSHARE_ATTACH		_IOWR('x', 0x21, struct mshare_attach)
#define MSHARE_DETACH		_IOW('x', 0x22, struct mshare_detach)
#define MSHARE_MAP		_IOW('x', 0x23, struct mshare_map)
#define MSHARE_UNMAP		_IOW('x', 0x24, struct mshare_range)
#define MSHARE_PROTECT		_IOW('x', 0x25, struct mshare_protect)
#define MSHARE_ADVISE		_IOW('x', 0x26, struct mshare_advise)

/*
 * The same calls as system calls, on a kernel with CONFIG_MSHARE_SYSCALLS (the core-mm
 * series' "mm: mshare system calls, answered by a driver"; x86-64's numbers). ENOSYS
 * while the module is not loaded, or on a kernel without them: use /dev/mshare there.
 *
 *   fd   = mshare_create(O_CLOEXEC);
 *   ftruncate(fd, size);
 *   mshare_map(fd, offset, size, PROT_READ | PROT_WRITE, 0, -1);
 *   addr = mshare_attach(fd, offset, size, NULL, 0);
 *   mshare_protect(fd, 0, size, PROT_READ);          the whole region, for every process
 *   mshare_advise(fd, offset, size, MADV_DONTNEED);
 *   mshare_detach(addr, size);
 *   mshare_unmap(fd, offset, size);
 */
#ifndef __NR_mshare_create
#define __NR_mshare_create	473
#define __NR_mshare_attach	474
#define __NR_mshare_detach	475
#define __NR_mshare_map		476
#define __NR_mshare_unmap	477
#define __NR_mshare_protect	478
#define __NR_mshare_advise	479
#endif

#ifndef __KERNEL__
/*
 * The calls for C programs: -1 and errno on failure, as libc's wrappers; mshare_attach()
 * returns the window's address, or (void *)-1 (MAP_FAILED).
 */
long syscall(long number, ...);

static inline int mshare_create(unsigned int flags)
{
	return (int)syscall(__NR_mshare_create, flags);
}

static inline void *mshare_attach(int fd, __u64 offset, __u64 size, void *addr, unsigned int flags)
{
	return (void *)syscall(__NR_mshare_attach, fd, offset, size, addr, flags);
}

static inline int mshare_detach(void *addr, __u64 size)
{
	return (int)syscall(__NR_mshare_detach, addr, size);
}

static inline int mshare_map(int fd, __u64 offset, __u64 size, unsigned int prot, unsigned int flags,
			     int object_fd)
{
	return (int)syscall(__NR_mshare_map, fd, offset, size, prot, flags, object_fd);
}

static inline int mshare_unmap(int fd, __u64 offset, __u64 size)
{
	return (int)syscall(__NR_mshare_unmap, fd, offset, size);
}

static inline int mshare_protect(int fd, __u64 offset, __u64 size, unsigned int prot)
{
	return (int)syscall(__NR_mshare_protect, fd, offset, size, prot);
}

static inline int mshare_advise(int fd, __u64 offset, __u64 size, int advice)
{
	return (int)syscall(__NR_mshare_advise, fd, offset, size, advice);
}
#endif

#endif /* MSHARE_H */
