// SPDX-License-Identifier: GPL-2.0
/*
 * The January 2025 series' cover-letter example, as a user would type it: a region at a
 * fixed address (2 TiB), its memory made with MSHAREFS_CREATE_MAPPING at that address,
 * mapped there; a forked child attaches through MSHAREFS_GET_SIZE and maps start/size.
 * Built against the series' header name (linux/msharefs.h) with nothing changed.
 *
 * Prints each process's minor faults for touching every page of the window, and ends
 * with "mshare-cover-v1: ok" (exit 0), or says what failed (exit 1).
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/msharefs.h>

#define TB(x) ((unsigned long)(x) << 40)
#define BUFFER_SIZE (8UL << 20)
#define REGION "/sys/fs/mshare/shareme"

static long minor_faults(void)
{
	struct rusage usage;

	getrusage(RUSAGE_SELF, &usage);
	return usage.ru_minflt;
}

/* Touches every 4 KiB page of the window; returns the minor faults that took. */
static long touch(char *addr, unsigned long size)
{
	long before = minor_faults();

	for (unsigned long off = 0; off < size; off += 4096)
		((volatile char *)addr)[off] = ((volatile char *)addr)[off];
	return minor_faults() - before;
}

static int fail(const char *what)
{
	perror(what);
	printf("mshare-cover-v1: FAILED at %s\n", what);
	return 1;
}

static int child(void)
{
	struct mshare_info minfo;
	char *addr;
	int fd = open(REGION, O_RDWR);

	if (fd < 0)
		return fail("child open");
	if (ioctl(fd, MSHAREFS_GET_SIZE, &minfo) < 0)
		return fail("child MSHAREFS_GET_SIZE");
	if (minfo.start != TB(2) || minfo.size != BUFFER_SIZE) {
		printf("mshare-cover-v1: GET_SIZE gave start %#llx size %llu\n", minfo.start, minfo.size);
		return 1;
	}
	addr = mmap((void *)minfo.start, minfo.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (addr == MAP_FAILED)
		return fail("child mmap");
	/* Before anything reads the window, so that its first fault is counted. */
	printf("mshare-cover-v1: child faults=%ld\n", touch(addr, minfo.size));
	if (addr != (char *)TB(2) || strcmp(addr, "hello from the creator") != 0) {
		printf("mshare-cover-v1: child mapped at %p and read '%.32s'\n", (void *)addr, addr);
		return 1;
	}
	strcpy(addr + BUFFER_SIZE - 4096, "hello from the child");
	return 0;
}

int main(void)
{
	struct mshare_info minfo = { 0 };
	struct mshare_create mcreate = { 0 };
	char *addr;
	int fd, status;
	pid_t pid;

	unlink(REGION);
	fd = open(REGION, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0)
		return fail("open");
	minfo.start = TB(2);
	minfo.size = BUFFER_SIZE;
	if (ioctl(fd, MSHAREFS_SET_SIZE, &minfo) < 0)
		return fail("MSHAREFS_SET_SIZE");
	mcreate.addr = TB(2);
	mcreate.size = BUFFER_SIZE;
	mcreate.offset = 0;
	mcreate.prot = PROT_READ | PROT_WRITE;
	mcreate.flags = MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED;
	mcreate.fd = -1;
	if (ioctl(fd, MSHAREFS_CREATE_MAPPING, &mcreate) < 0)
		return fail("MSHAREFS_CREATE_MAPPING");
	addr = mmap((void *)TB(2), BUFFER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (addr == MAP_FAILED)
		return fail("mmap");
	if (addr != (char *)TB(2)) {
		printf("mshare-cover-v1: mapped at %p, not at the region's start\n", (void *)addr);
		return 1;
	}
	printf("mshare-cover-v1: creator faults=%ld\n", touch(addr, BUFFER_SIZE));
	strcpy(addr, "hello from the creator");

	pid = fork();
	if (pid < 0)
		return fail("fork");
	if (pid == 0) {
		/* A fresh process attaches as the cover letter's second program does. */
		munmap(addr, BUFFER_SIZE);
		close(fd);
		_exit(child());
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		printf("mshare-cover-v1: the child failed (status %#x)\n", status);
		return 1;
	}
	if (strcmp(addr + BUFFER_SIZE - 4096, "hello from the child") != 0) {
		printf("mshare-cover-v1: the child's write did not reach the creator\n");
		return 1;
	}
	munmap(addr, BUFFER_SIZE);
	close(fd);
	unlink(REGION);
	printf("mshare-cover-v1: ok\n");
	return 0;
}
