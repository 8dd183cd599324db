/*
 * shm-anon-counter: an unmodified program of the kind PostgreSQL is. Its shared memory is
 * one shared anonymous mapping, made before it forks its workers; a process-shared mutex
 * (a futex) in it guards a counter that every worker adds to, and the workers pass a
 * baton round through a futex word of their own.
 *
 *   shm-anon-counter SIZE_MIB WORKERS ADDS
 *
 * Prints "shm-anon-counter: segment <the /proc/self/maps line of the segment>" and, when
 * the counter and the baton come out right, "shm-anon-counter: ok COUNT". Exit status 0
 * then, 1 otherwise. Nothing in it knows about mshare: run under `mshare run`, the mapping
 * is an msharefs window.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

struct shared {
	pthread_mutex_t lock;
	uint64_t counter;
	_Atomic uint32_t baton; /* whose turn it is to pass the baton on */
	_Atomic uint32_t passes;
};

static long futex(_Atomic uint32_t *word, int op, uint32_t value)
{
	return syscall(SYS_futex, word, op, value, NULL, NULL, 0);
}

/*
 * Prints the line of /proc/self/maps that holds addr (as "segment"), or the first that
 * overlaps [addr, addr + len) (as "left"); returns whether there was one.
 */
static int print_segment(const char *prog, const char *what, const void *addr, size_t len, int *msharefs)
{
	char line[512];
	int found = 0;

	FILE *maps = fopen("/proc/self/maps", "r");

	while (maps && !found && fgets(line, sizeof(line), maps)) {
		unsigned long start, end, a = (unsigned long)addr;

		if (sscanf(line, "%lx-%lx", &start, &end) == 2 && a < end && a + len > start) {
			printf("%s: %s %s", prog, what, line);
			found = 1;
			if (msharefs)
				*msharefs = strstr(line, " /sys/fs/mshare/") != NULL;
		}
	}
	if (maps)
		fclose(maps);
	fflush(stdout);
	return found;
}

static void work(struct shared *s, uint32_t me, uint32_t workers, long adds)
{
	for (long i = 0; i < adds; i++) {
		pthread_mutex_lock(&s->lock);
		s->counter++;
		pthread_mutex_unlock(&s->lock);
	}
	/* Each worker waits (FUTEX_WAIT) for its turn, then hands the baton on. */
	for (uint32_t turn; (turn = atomic_load(&s->baton)) != me;)
		futex(&s->baton, FUTEX_WAIT, turn);
	atomic_fetch_add(&s->passes, 1);
	atomic_store(&s->baton, (me + 1) % (workers + 1));
	futex(&s->baton, FUTEX_WAKE, INT32_MAX);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: shm-anon-counter SIZE_MIB WORKERS ADDS\n");
		return 2;
	}
	size_t size = strtoul(argv[1], NULL, 0) << 20;
	uint32_t workers = strtoul(argv[2], NULL, 0);
	long adds = strtol(argv[3], NULL, 0);

	struct shared *s = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (s == MAP_FAILED) {
		fprintf(stderr, "shm-anon-counter: mmap of %zu bytes: %s\n", size, strerror(errno));
		return 1;
	}
	int on_msharefs = 0;
	print_segment("shm-anon-counter", "segment", s, 1, &on_msharefs);
	pthread_mutexattr_t attr;
	pthread_mutexattr_init(&attr);
	pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
	pthread_mutex_init(&s->lock, &attr);
	memset((char *)s + size - 4096, 0x5a, 4096); /* the last page too is there */
	atomic_store(&s->baton, 1);

	for (uint32_t w = 1; w <= workers; w++) {
		pid_t pid = fork();

		if (pid < 0) {
			perror("shm-anon-counter: fork");
			return 1;
		}
		if (pid == 0) {
			work(s, w, workers, adds);
			_exit(((unsigned char *)s)[size - 1] == 0x5a ? 0 : 3);
		}
	}
	int failed = 0;
	for (uint32_t w = 0; w < workers; w++) {
		int status;

		if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failed = 1;
	}
	uint64_t want = (uint64_t)workers * adds;
	if (failed || s->counter != want || atomic_load(&s->passes) != workers) {
		printf("shm-anon-counter: FAILED counter %llu (want %llu), passes %u (want %u), workers %s\n",
		       (unsigned long long)s->counter, (unsigned long long)want, atomic_load(&s->passes), workers,
		       failed ? "failed" : "exited 0");
		return 1;
	}
	uint64_t counted = s->counter;
	if (munmap(s, size) != 0) {
		fprintf(stderr, "shm-anon-counter: munmap: %s\n", strerror(errno));
		return 1;
	}
	/*
	 * What munmap took: the segment, and on msharefs the rest of the window's last 2 MiB
	 * granule, which the program never asked for (ordinary memory may have a neighbour
	 * there).
	 */
	size_t window = on_msharefs ? (size + (2 << 20) - 1) & ~(size_t)((2 << 20) - 1) : size;
	if (print_segment("shm-anon-counter", "FAILED: left after munmap:", s, window, NULL))
		return 1;
	printf("shm-anon-counter: ok %llu\n", (unsigned long long)counted);
	return 0;
}
