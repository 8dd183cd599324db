/*
 * shm-sysv-counter: an unmodified program of the kind Oracle's SGA is. Its shared memory
 * is a System V segment with a key; its workers, forked, detach what they inherited and
 * find the segment again by its key (shmget, shmat), as unrelated processes would. A
 * process-shared mutex (a futex) in the segment guards a counter every worker adds to.
 *
 *   shm-sysv-counter SIZE_MIB WORKERS ADDS
 *
 * Prints "shm-sysv-counter: segment <the /proc/self/maps line of the attachment>", then
 * "shm-sysv-counter: ok COUNT" when the counter, the kernel's count of attachments
 * (IPC_STAT) and the removal come out right. Exit status 0 then, 1 otherwise.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

struct shared {
	pthread_mutex_t lock;
	uint64_t counter;
};

static void print_segment(const void *addr)
{
	char line[512];
	FILE *maps = fopen("/proc/self/maps", "r");

	while (maps && fgets(line, sizeof(line), maps)) {
		unsigned long start, end;

		if (sscanf(line, "%lx-%lx", &start, &end) == 2 && (unsigned long)addr >= start &&
		    (unsigned long)addr < end) {
			printf("shm-sysv-counter: segment %s", line);
			break;
		}
	}
	if (maps)
		fclose(maps);
	fflush(stdout);
}

static int fail(const char *what)
{
	printf("shm-sysv-counter: FAILED: %s: %s\n", what, strerror(errno));
	return 1;
}

/* A worker: attaches the segment by its key, adds, detaches. */
static int work(key_t key, long adds)
{
	int id = shmget(key, 0, 0);
	if (id < 0)
		return 10;
	struct shared *s = shmat(id, NULL, 0);
	if (s == (void *)-1)
		return 11;
	for (long i = 0; i < adds; i++) {
		pthread_mutex_lock(&s->lock);
		s->counter++;
		pthread_mutex_unlock(&s->lock);
	}
	return shmdt(s) == 0 ? 0 : 12;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: shm-sysv-counter SIZE_MIB WORKERS ADDS\n");
		return 2;
	}
	size_t size = strtoul(argv[1], NULL, 0) << 20;
	int workers = atoi(argv[2]);
	long adds = strtol(argv[3], NULL, 0);
	key_t key = 0x6d730000 | (getpid() & 0xffff);

	int id = shmget(key, size, IPC_CREAT | IPC_EXCL | 0600);
	if (id < 0)
		return fail("shmget");
	struct shared *s = shmat(id, NULL, 0);
	if (s == (void *)-1)
		return fail("shmat");
	print_segment(s);
	pthread_mutexattr_t attr;
	pthread_mutexattr_init(&attr);
	pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
	pthread_mutex_init(&s->lock, &attr);
	((char *)s)[size - 1] = 1; /* the last byte too is there */

	for (int w = 0; w < workers; w++) {
		pid_t pid = fork();

		if (pid < 0)
			return fail("fork");
		if (pid == 0) {
			if (shmdt(s) != 0)
				_exit(9);
			_exit(work(key, adds));
		}
	}
	int failed = 0;
	for (int w = 0; w < workers; w++) {
		int status;

		if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			printf("shm-sysv-counter: a worker failed (status %#x)\n", status);
			failed = 1;
		}
	}
	struct shmid_ds ds;
	if (shmctl(id, IPC_STAT, &ds) != 0)
		return fail("IPC_STAT");
	uint64_t want = (uint64_t)workers * adds;
	if (failed || s->counter != want || ds.shm_nattch != 1 || ds.shm_segsz != size) {
		printf("shm-sysv-counter: FAILED counter %llu (want %llu), shm_nattch %lu (want 1), shm_segsz %zu (want %zu)\n",
		       (unsigned long long)s->counter, (unsigned long long)want, (unsigned long)ds.shm_nattch,
		       (size_t)ds.shm_segsz, size);
		return 1;
	}
	uint64_t counted = s->counter;
	if (shmctl(id, IPC_RMID, NULL) != 0)
		return fail("IPC_RMID");
	if (shmdt(s) != 0)
		return fail("shmdt");
	if (shmget(key, 0, 0) >= 0 || errno != ENOENT)
		return fail("the key outlived IPC_RMID and the last detach");
	printf("shm-sysv-counter: ok %llu\n", (unsigned long long)counted);
	return 0;
}
