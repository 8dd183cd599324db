// SPDX-License-Identifier: GPL-2.0
/*
 * A memfd inside a region: MSHAREFS_CREATE_MAPPING with the descriptor of a memfd gives
 * part of the region the memfd's pages, which every window of the region then shows
 * through the region's shared page tables (mode B), writes reaching the memfd.
 *
 *   mshare-memfd [REGION_DIR]    (default /sys/fs/mshare, an api=v1 mount)
 *
 * The region is 8 MiB: [0, 4 MiB) anonymous memory, [4, 8 MiB) the memfd's [2, 6 MiB).
 * Checks: the memfd's bytes through a window and through read(2) of the region file; a
 * write through the window in the memfd (pread) and one through the memfd's own mapping
 * in the window; a futex wait on the memfd's own mapping woken through the window (one
 * key: the memfd's page); 64 processes touching every page of the memfd part through their
 * own windows (minor faults per process printed: one in mode B, the tables linked once);
 * the memfd closed while the region lives keeps the memory; F_SEAL_WRITE refused while the
 * region holds the memfd; UNMAP of the part leaves the memfd's data and makes the range a
 * hole; and the errors of a bad request. Ends with "mshare-memfd: N checks, F failed" and
 * "mshare-memfd: ok" (exit 0) when F is 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/msharefs.h>

#define MIB (1UL << 20)
#define PAGE 4096UL
#define REGION_SIZE (8 * MIB)
#define FILE_PART (4 * MIB)		/* where the memfd shows in the region */
#define FILE_OFFSET (2 * MIB)		/* from where in the memfd */
#define FILE_LEN (4 * MIB)
#define MEMFD_SIZE (8 * MIB)
#define SHARERS 64

static int checks, failed;
static char path[256];

static void check(int ok, const char *what)
{
	checks++;
	if (!ok) {
		failed++;
		printf("mshare-memfd: FAILED: %s (errno %d, %s)\n", what, errno, strerror(errno));
		fflush(stdout);
	}
}

/* The stamp of page `index` of the memfd. */
static void stamp(char *buf, unsigned long index)
{
	memset(buf, 0, 64);
	snprintf(buf, 64, "memfd page %lu", index);
}

/* A handled SIGSEGV leaves no "segfault at" line on the console, interleaved with ours. */
static void exit_on_segv(int sig)
{
	(void)sig;
	_exit(42);
}

static long minor_faults(void)
{
	struct rusage usage;

	getrusage(RUSAGE_SELF, &usage);
	return usage.ru_minflt;
}

static int create_file_mapping(int region, unsigned long at, unsigned long len, int fd, unsigned long offset,
			       unsigned int flags)
{
	struct mshare_create create = {
		.addr = at, .size = len, .offset = offset, .prot = PROT_READ | PROT_WRITE,
		.flags = flags, .fd = (unsigned int)fd,
	};

	return ioctl(region, MSHAREFS_CREATE_MAPPING, &create);
}

static int errno_of(int ret)
{
	return ret < 0 ? errno : 0;
}

static char *map_window(void)
{
	int fd = open(path, O_RDWR);
	char *addr;

	if (fd < 0)
		return MAP_FAILED;
	addr = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	return addr;
}

/* Every process maps the region itself and reads every page of the memfd part. */
static int sharer(long *faults_out)
{
	char *window = map_window();
	long before, faults;
	char want[64];

	if (window == MAP_FAILED)
		return 2;
	before = minor_faults();
	for (unsigned long off = 0; off < FILE_LEN; off += PAGE)
		if (((volatile char *)window)[FILE_PART + off] == 0x7f)
			return 3;
	faults = minor_faults() - before;
	stamp(want, (FILE_OFFSET + FILE_LEN) / PAGE - 1);
	if (memcmp(window + FILE_PART + FILE_LEN - PAGE, want, 64) != 0)
		return 4;
	*faults_out = faults;
	return 0;
}

static void check_errors(int region, int memfd)
{
	char fdpath[64];
	int ro, devnull, sealed;

	check(errno_of(create_file_mapping(region, 0, 2 * MIB, memfd, 0, MAP_SHARED | MAP_ANONYMOUS)) == EINVAL,
	      "MAP_ANONYMOUS with a descriptor is EINVAL");
	check(errno_of(create_file_mapping(region, 0, 2 * MIB, -1, 0, MAP_SHARED)) == EBADF,
	      "a file mapping without a descriptor is EBADF");
	check(errno_of(create_file_mapping(region, 0, 2 * MIB, memfd, PAGE, MAP_SHARED)) == EINVAL,
	      "a file offset that is not granule aligned is EINVAL");
	check(errno_of(create_file_mapping(region, 0, 2 * MIB, memfd, MEMFD_SIZE, MAP_SHARED)) == EINVAL,
	      "file pages past the file's end are EINVAL");
	devnull = open("/dev/null", O_RDWR);
	check(errno_of(create_file_mapping(region, 0, 2 * MIB, devnull, 0, MAP_SHARED)) == EOPNOTSUPP,
	      "a file that is not shmem is EOPNOTSUPP");
	close(devnull);
	snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", memfd);
	ro = open(fdpath, O_RDONLY);
	check(ro >= 0 && errno_of(create_file_mapping(region, 0, 2 * MIB, ro, 0, MAP_SHARED)) == EACCES,
	      "a memfd open read-only is EACCES");
	close(ro);
	sealed = memfd_create("mshare-memfd-sealed", MFD_ALLOW_SEALING);
	check(sealed >= 0 && ftruncate(sealed, 2 * MIB) == 0 && fcntl(sealed, F_ADD_SEALS, F_SEAL_WRITE) == 0,
	      "a write-sealed memfd");
	check(errno_of(create_file_mapping(region, 0, 2 * MIB, sealed, 0, MAP_SHARED)) == EPERM,
	      "a write-sealed memfd is EPERM");
	close(sealed);
	check(errno_of(create_file_mapping(region, 0, 2 * MIB, memfd, 0, MAP_SHARED)) == EINVAL,
	      "a file mapping over memory the region has is EINVAL");
}

static int futex_across(char *window, char *own)
{
	uint32_t *theirs = (uint32_t *)(own + FILE_OFFSET + MIB);
	uint32_t *mine = (uint32_t *)(window + FILE_PART + MIB);
	long woken = 0;
	pid_t pid;

	*mine = 0;
	pid = fork();
	if (pid == 0) {
		struct timespec ten_seconds = { .tv_sec = 10 };

		/* On the memfd's own mapping, inherited. */
		while (__atomic_load_n(theirs, __ATOMIC_ACQUIRE) == 0)
			if (syscall(SYS_futex, theirs, FUTEX_WAIT, 0, &ten_seconds, NULL, 0) < 0 && errno != EAGAIN &&
			    errno != EINTR)
				_exit(1);
		_exit(0);
	}
	for (int tries = 0; tries < 5000 && woken == 0; tries++) {
		woken = syscall(SYS_futex, mine, FUTEX_WAKE, 1, NULL, NULL, 0);
		if (woken == 0)
			usleep(1000);
	}
	__atomic_store_n(mine, 1, __ATOMIC_RELEASE);
	syscall(SYS_futex, mine, FUTEX_WAKE, 1, NULL, NULL, 0);
	int status;

	waitpid(pid, &status, 0);
	return woken == 1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/sys/fs/mshare";
	struct mshare_create anonymous = {
		.addr = 0, .size = FILE_PART, .prot = PROT_READ | PROT_WRITE,
		.flags = MAP_SHARED | MAP_ANONYMOUS, .fd = -1,
	};
	char buf[64], want[64], *window, *own;
	pid_t pids[SHARERS];
	int region, memfd, bad_sharers = 0;
	long max_faults = 0, *faults = mmap(NULL, SHARERS * sizeof(long), PROT_READ | PROT_WRITE,
					    MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	setvbuf(stdout, NULL, _IOLBF, 0);
	alarm(600);
	snprintf(path, sizeof(path), "%s/memfd-check", dir);
	memfd = memfd_create("mshare-memfd", MFD_ALLOW_SEALING);
	if (faults == MAP_FAILED || memfd < 0 || ftruncate(memfd, MEMFD_SIZE) < 0) {
		perror("memfd");
		return 1;
	}
	for (unsigned long i = 0; i < MEMFD_SIZE / PAGE; i++) {
		stamp(buf, i);
		if (pwrite(memfd, buf, sizeof(buf), i * PAGE) != sizeof(buf)) {
			perror("pwrite memfd");
			return 1;
		}
	}
	region = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (region < 0 || ftruncate(region, REGION_SIZE) < 0 || ioctl(region, MSHAREFS_CREATE_MAPPING, &anonymous) < 0) {
		perror("region");
		return 1;
	}
	check_errors(region, memfd);
	check(create_file_mapping(region, FILE_PART, FILE_LEN, memfd, FILE_OFFSET, MAP_SHARED) == 0,
	      "CREATE_MAPPING of the memfd's [2, 6 MiB) at [4, 8 MiB)");
	window = map_window();
	own = mmap(NULL, MEMFD_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (window == MAP_FAILED || own == MAP_FAILED) {
		perror("mmap");
		return 1;
	}

	stamp(want, FILE_OFFSET / PAGE + 5);
	check(memcmp(window + FILE_PART + 5 * PAGE, want, 64) == 0, "the memfd's page through the window");
	check(pread(region, buf, 64, FILE_PART + 5 * PAGE) == 64 && memcmp(buf, want, 64) == 0,
	      "the memfd's page through read(2) of the region");
	strcpy(window + FILE_PART + MIB + 100, "written through the region");
	check(pread(memfd, buf, 64, FILE_OFFSET + MIB + 100) == 64 && strcmp(buf, "written through the region") == 0,
	      "a write through the window is in the memfd");
	strcpy(own + FILE_OFFSET + 2 * MIB + 200, "written through the memfd");
	check(strcmp(window + FILE_PART + 2 * MIB + 200, "written through the memfd") == 0,
	      "a write through the memfd's mapping shows in the window");
	check(pwrite(region, "pwrite into the region", 23, FILE_PART + 3 * MIB) == 23 &&
		      strcmp(own + FILE_OFFSET + 3 * MIB, "pwrite into the region") == 0,
	      "pwrite(2) of the region is in the memfd");
	check(futex_across(window, own), "a futex wait on the memfd's mapping is woken through the window");

	for (int i = 0; i < SHARERS; i++) {
		pids[i] = fork();
		if (pids[i] == 0)
			_exit(sharer(&faults[i]));
	}
	for (int i = 0; i < SHARERS; i++) {
		int status;

		waitpid(pids[i], &status, 0);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			bad_sharers++;
			continue;
		}
		if (faults[i] > max_faults)
			max_faults = faults[i];
	}
	printf("mshare-memfd: sharers=%d bad=%d max_faults_per_sharer=%ld pages_each=%lu\n", SHARERS, bad_sharers,
	       max_faults, FILE_LEN / PAGE);
	check(bad_sharers == 0, "every sharer read the memfd's pages");
	fflush(stdout);
	check(system("mshare list") == 0, "mshare list shows the region");

	check(fcntl(memfd, F_ADD_SEALS, F_SEAL_WRITE) < 0 && errno == EBUSY,
	      "F_SEAL_WRITE is refused while the region holds the memfd");
	munmap(own, MEMFD_SIZE);
	close(memfd);
	stamp(want, FILE_OFFSET / PAGE + 7);
	check(memcmp(window + FILE_PART + 7 * PAGE, want, 64) == 0, "the memfd closed, the region keeps its pages");
	strcpy(window + FILE_PART + 8 * PAGE, "after close");
	check(strcmp(window + FILE_PART + 8 * PAGE, "after close") == 0, "and they take writes");

	struct mshare_unmap unmap = { .addr = FILE_PART, .size = FILE_LEN };
	check(ioctl(region, MSHAREFS_UNMAP, &unmap) == 0, "UNMAP of the memfd's part");
	pid_t pid = fork();
	int status;

	if (pid == 0) {
		signal(SIGSEGV, exit_on_segv);
		_exit(((volatile char *)window)[FILE_PART] == 1);
	}
	waitpid(pid, &status, 0);
	check(WIFEXITED(status) && WEXITSTATUS(status) == 42, "the UNMAPped part is a hole (SIGSEGV)");
	check(pread(region, buf, 8, FILE_PART) == 8 && buf[0] == 0, "and reads as zeros");

	munmap(window, REGION_SIZE);
	close(region);
	check(unlink(path) == 0, "unlink the region");
	printf("mshare-memfd: %d checks, %d failed\n", checks, failed);
	if (!failed)
		printf("mshare-memfd: ok\n");
	return failed != 0;
}
