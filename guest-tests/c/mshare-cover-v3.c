// SPDX-License-Identifier: GPL-2.0
/*
 * The v2/v3 series' example (cover letter and Documentation/filesystems/msharefs.rst):
 * size by ftruncate, memory by MSHAREFS_CREATE_MAPPING at region offset 0 (MAP_FIXED),
 * mmap(NULL) of the whole region; another process attaches with fstat and mmap(NULL).
 * Built against the series' header name with MSHAREFS_API_V3, run on an api=v3 mount:
 *
 *   mount -t msharefs -o api=v3 msharefs MOUNT; mshare-cover-v3 MOUNT
 *
 * Ends with "mshare-cover-v3: ok" (exit 0), or says what failed (exit 1).
 */
#define MSHAREFS_API_V3
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/msharefs.h>

#define BUFFER_SIZE (4UL << 20)

static int fail(const char *what)
{
	perror(what);
	printf("mshare-cover-v3: FAILED at %s\n", what);
	return 1;
}

static int attach(const char *path)
{
	struct stat st;
	char *addr;
	int fd = open(path, O_RDWR);

	if (fd < 0 || fstat(fd, &st) < 0)
		return fail("child open/fstat");
	addr = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (addr == MAP_FAILED)
		return fail("child mmap");
	if (st.st_size != BUFFER_SIZE || strcmp(addr, "written through a v3 region") != 0) {
		printf("mshare-cover-v3: child saw size %lld and '%.32s'\n", (long long)st.st_size, addr);
		return 1;
	}
	strcpy(addr + st.st_size - 64, "and back");
	return 0;
}

int main(int argc, char **argv)
{
	struct mshare_create mcreate = { 0 };
	char path[PATH_MAX];
	char *addr;
	int fd, status;
	pid_t pid;

	if (argc != 2) {
		fprintf(stderr, "usage: mshare-cover-v3 MOUNT (an msharefs mount with -o api=v3)\n");
		return 2;
	}
	snprintf(path, sizeof(path), "%s/shareme-v3", argv[1]);
	unlink(path);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0)
		return fail("open");
	if (ftruncate(fd, BUFFER_SIZE) < 0)
		return fail("ftruncate");
	mcreate.region_offset = 0;
	mcreate.size = BUFFER_SIZE;
	mcreate.offset = 0;
	mcreate.prot = PROT_READ | PROT_WRITE;
	mcreate.flags = MAP_ANONYMOUS | MAP_SHARED | MAP_FIXED;
	mcreate.fd = -1;
	if (ioctl(fd, MSHAREFS_CREATE_MAPPING, &mcreate) < 0)
		return fail("MSHAREFS_CREATE_MAPPING");
	addr = mmap(NULL, BUFFER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (addr == MAP_FAILED)
		return fail("mmap");
	strcpy(addr, "written through a v3 region");
	pid = fork();
	if (pid < 0)
		return fail("fork");
	if (pid == 0) {
		munmap(addr, BUFFER_SIZE);
		close(fd);
		_exit(attach(path));
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		printf("mshare-cover-v3: the child failed (status %#x)\n", status);
		return 1;
	}
	if (strcmp(addr + BUFFER_SIZE - 64, "and back") != 0) {
		printf("mshare-cover-v3: the child's write did not come back\n");
		return 1;
	}
	munmap(addr, BUFFER_SIZE);
	close(fd);
	unlink(path);
	printf("mshare-cover-v3: ok\n");
	return 0;
}
