// SPDX-License-Identifier: GPL-2.0
/*
 * Region memory the kernel can take (get_user_pages): futexes, with glibc's own
 * process-shared primitives, and the calls that reference user pages. What a database
 * keeps in shared memory (PostgreSQL's semaphores and LWLocks, LMDB's reader table) works
 * only if the kernel can key a futex on region memory.
 *
 *   mshare-gup [REGION_DIR]    (default /sys/fs/mshare, an api=v1 mount)
 *
 * Each check prints one "mshare-gup: <check> ..." line with its figures:
 *   raw        FUTEX_WAIT in one process, FUTEX_WAKE from another that maps the region at
 *              another address: the wake must find the waiter (same key)
 *   mutex      16 processes, each with its own window at its own address, increment one
 *              counter under a PTHREAD_PROCESS_SHARED mutex, yielding inside the lock so
 *              that they contend: the counter must be exact
 *   condvar    a forked child and its parent hand a turn back and forth through a shared
 *              condition variable
 *   semaphore  two processes (different addresses) ping-pong two shared sem_t
 *   threads    4 threads of one process share a PTHREAD_PROCESS_PRIVATE mutex in the
 *              region (private futex keys)
 *   robust     the owner of a robust mutex is killed while another process waits for it:
 *              the waiter gets EOWNERDEAD, makes it consistent, and locks it again
 *   remote     /proc/PID/mem read and write of a child's window at the child's address
 *              (GUP of another mm, as ptrace and debuggers use it): what one reads and
 *              writes, the other sees
 *   vmsplice   region pages spliced into a pipe are referenced, not copied: a write to
 *              the region after the splice shows in what the pipe then gives
 * and ends with "mshare-gup: ok" (exit 0), or says what failed (exit 1). A hang (a wake
 * that never reaches its waiter) is cut off by an alarm and reported.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/msharefs.h>

#define GRANULE (2UL << 20)
#define REGION_SIZE (2 * GRANULE)
#define PROCESSES 16
#define ROUNDS 1000
#define HANDOFFS 300
#define THREADS 4
#define TIME_LIMIT_S 600

/* The first granule: everything but the robust mutex. */
struct shared {
	uint32_t word;			/* raw futex */
	uint32_t raw_ready;
	pthread_mutex_t lock;		/* mutex */
	long counter;
	pthread_mutex_t cond_lock;	/* condvar */
	pthread_cond_t cond;
	int turn;
	sem_t ping, pong;		/* semaphore */
	pthread_mutex_t private_lock;	/* threads */
	long private_counter;
	uintptr_t addresses[PROCESSES];
};

/* The second granule: the robust mutex and what its owner wrote under it. */
struct robust {
	pthread_mutex_t lock;
	int value;
};

static char path[256];

static int fail(const char *what, int err)
{
	printf("mshare-gup: FAILED at %s: %s\n", what, strerror(err));
	fflush(stdout);
	return 1;
}

static void timed_out(int sig)
{
	static const char msg[] = "mshare-gup: FAILED: timed out (a wake never reached its waiter?)\n";

	(void)sig;
	if (write(STDOUT_FILENO, msg, sizeof(msg) - 1) < 0)
		_exit(2);
	kill(0, SIGKILL);
}

/* A window of its own for a child, away from the parent's: hinted at 1 GiB * (n + 1). */
static void *map_own_window(int n)
{
	void *hint = (void *)(0x200000000000UL + ((unsigned long)n + 1) * (1UL << 30));
	int fd = open(path, O_RDWR);
	void *addr;

	if (fd < 0)
		return MAP_FAILED;
	addr = mmap(hint, REGION_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	return addr;
}

/* Waits for every child; 0 if each exited 0, else says which did not. */
static int reap(const char *check, pid_t *pids, int n)
{
	int bad = 0;

	for (int i = 0; i < n; i++) {
		int status;

		if (waitpid(pids[i], &status, 0) < 0)
			return fail("waitpid", errno);
		if (WIFSIGNALED(status)) {
			printf("mshare-gup: %s: child %d killed by signal %d\n", check, i, WTERMSIG(status));
			bad = 1;
		} else if (WEXITSTATUS(status) != 0) {
			printf("mshare-gup: %s: child %d exited %d\n", check, i, WEXITSTATUS(status));
			bad = 1;
		}
	}
	return bad;
}

static long futex(uint32_t *word, int op, uint32_t val, const struct timespec *timeout)
{
	return syscall(SYS_futex, word, op, val, timeout, NULL, 0);
}

static int check_raw(struct shared *s)
{
	struct timespec ten_seconds = { .tv_sec = 10 };
	pid_t pid = fork();
	long woken = 0;

	if (pid < 0)
		return fail("fork", errno);
	if (pid == 0) {
		struct shared *own = map_own_window(0);

		if (own == MAP_FAILED)
			_exit(fail("raw: child mmap", errno));
		/* Wake until a waiter is found (it may not be asleep yet), then release it. */
		while (!__atomic_load_n(&own->raw_ready, __ATOMIC_ACQUIRE))
			sched_yield();
		for (int tries = 0; tries < 10000 && woken == 0; tries++) {
			woken = futex(&own->word, FUTEX_WAKE, 1, NULL);
			if (woken == 0)
				usleep(1000);
		}
		if (woken < 0)
			_exit(fail("raw: FUTEX_WAKE", errno));
		__atomic_store_n(&own->word, 1, __ATOMIC_RELEASE);
		futex(&own->word, FUTEX_WAKE, 1, NULL);
		printf("mshare-gup: raw child_window=%p woken=%ld\n", (void *)own, woken);
		_exit(woken == 1 ? 0 : 1);
	}
	__atomic_store_n(&s->raw_ready, 1, __ATOMIC_RELEASE);
	for (int waits = 0; waits < 3 && __atomic_load_n(&s->word, __ATOMIC_ACQUIRE) == 0; waits++) {
		if (futex(&s->word, FUTEX_WAIT, 0, &ten_seconds) < 0 && errno != EAGAIN && errno != EINTR) {
			int err = errno;

			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			return fail("raw: FUTEX_WAIT", err);
		}
	}
	return reap("raw", &pid, 1);
}

static int mutex_child(int n)
{
	struct shared *own = map_own_window(n);

	if (own == MAP_FAILED)
		return fail("mutex: child mmap", errno);
	own->addresses[n] = (uintptr_t)own;
	for (int i = 0; i < ROUNDS; i++) {
		int err = pthread_mutex_lock(&own->lock);
		long seen;

		if (err)
			return fail("mutex: pthread_mutex_lock", err);
		seen = own->counter;
		if (i % 8 == 0)
			sched_yield();
		own->counter = seen + 1;
		err = pthread_mutex_unlock(&own->lock);
		if (err)
			return fail("mutex: pthread_mutex_unlock", err);
	}
	return 0;
}

static int check_mutex(struct shared *s)
{
	pid_t pids[PROCESSES];
	int distinct = 0;

	for (int n = 0; n < PROCESSES; n++) {
		pids[n] = fork();
		if (pids[n] < 0)
			return fail("fork", errno);
		if (pids[n] == 0)
			_exit(mutex_child(n));
	}
	if (reap("mutex", pids, PROCESSES))
		return 1;
	for (int n = 0; n < PROCESSES; n++) {
		int seen = 0;

		for (int m = 0; m < n; m++)
			seen |= s->addresses[m] == s->addresses[n];
		distinct += !seen && s->addresses[n] != (uintptr_t)s;
	}
	printf("mshare-gup: mutex processes=%d counter=%ld expected=%d addresses=%d\n", PROCESSES, s->counter,
	       PROCESSES * ROUNDS, distinct);
	return s->counter != PROCESSES * ROUNDS || distinct != PROCESSES;
}

/* Waits until it is `me`'s turn, then gives the turn to the other side. */
static int hand_over(struct shared *s, int me)
{
	int err = pthread_mutex_lock(&s->cond_lock);

	if (err)
		return fail("condvar: pthread_mutex_lock", err);
	while (s->turn != me) {
		err = pthread_cond_wait(&s->cond, &s->cond_lock);
		if (err)
			return fail("condvar: pthread_cond_wait", err);
	}
	s->turn = !me;
	pthread_cond_signal(&s->cond);
	return pthread_mutex_unlock(&s->cond_lock) ? fail("condvar: unlock", EINVAL) : 0;
}

static int check_condvar(struct shared *s)
{
	pid_t pid = fork();

	if (pid < 0)
		return fail("fork", errno);
	if (pid == 0) {
		/* The child uses the window it inherited (fork), the parent's address. */
		for (int i = 0; i < HANDOFFS; i++)
			if (hand_over(s, 1))
				_exit(1);
		_exit(0);
	}
	for (int i = 0; i < HANDOFFS; i++)
		if (hand_over(s, 0)) {
			kill(pid, SIGKILL);
			reap("condvar", &pid, 1);
			return 1;
		}
	if (reap("condvar", &pid, 1))
		return 1;
	printf("mshare-gup: condvar handoffs=%d turn=%d\n", 2 * HANDOFFS, s->turn);
	return s->turn != 0;
}

static int check_semaphore(struct shared *s)
{
	pid_t pid = fork();

	if (pid < 0)
		return fail("fork", errno);
	if (pid == 0) {
		struct shared *own = map_own_window(1);

		if (own == MAP_FAILED)
			_exit(fail("semaphore: child mmap", errno));
		for (int i = 0; i < HANDOFFS; i++)
			if (sem_wait(&own->ping) || sem_post(&own->pong))
				_exit(fail("semaphore: child", errno));
		_exit(0);
	}
	for (int i = 0; i < HANDOFFS; i++)
		if (sem_post(&s->ping) || sem_wait(&s->pong)) {
			int err = errno;

			kill(pid, SIGKILL);
			reap("semaphore", &pid, 1);
			return fail("semaphore: parent", err);
		}
	if (reap("semaphore", &pid, 1))
		return 1;
	printf("mshare-gup: semaphore rounds=%d\n", HANDOFFS);
	return 0;
}

static void *thread_body(void *arg)
{
	struct shared *s = arg;

	for (int i = 0; i < ROUNDS; i++) {
		if (pthread_mutex_lock(&s->private_lock))
			return arg;
		long seen = s->private_counter;

		if (i % 8 == 0)
			sched_yield();
		s->private_counter = seen + 1;
		pthread_mutex_unlock(&s->private_lock);
	}
	return NULL;
}

static int check_threads(struct shared *s)
{
	pthread_t threads[THREADS];

	for (int i = 0; i < THREADS; i++) {
		int err = pthread_create(&threads[i], NULL, thread_body, s);

		if (err)
			return fail("pthread_create", err);
	}
	for (int i = 0; i < THREADS; i++) {
		void *ret;

		pthread_join(threads[i], &ret);
		if (ret)
			return fail("threads: pthread_mutex_lock", EINVAL);
	}
	printf("mshare-gup: threads=%d counter=%ld expected=%d\n", THREADS, s->private_counter, THREADS * ROUNDS);
	return s->private_counter != THREADS * ROUNDS;
}

static void *kill_after_a_while(void *arg)
{
	pid_t pid = *(pid_t *)arg;

	usleep(300 * 1000);
	kill(pid, SIGKILL);
	return NULL;
}

static int check_robust(struct robust *r)
{
	struct timespec deadline;
	pthread_t killer;
	int ready[2], err, status;
	char byte;
	pid_t pid;

	if (pipe(ready) < 0)
		return fail("pipe", errno);
	pid = fork();
	if (pid < 0)
		return fail("fork", errno);
	if (pid == 0) {
		struct shared *own = map_own_window(2);
		struct robust *mine = (struct robust *)((char *)own + GRANULE);

		if (own == MAP_FAILED)
			_exit(fail("robust: child mmap", errno));
		err = pthread_mutex_lock(&mine->lock);
		if (err)
			_exit(fail("robust: child lock", err));
		mine->value = 42;
		if (write(ready[1], "L", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	if (read(ready[0], &byte, 1) != 1)
		return fail("robust: the owner never locked", EIO);
	/* Block on the held mutex, and have the owner killed while this process waits. */
	pthread_create(&killer, NULL, kill_after_a_while, &pid);
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 30;
	err = pthread_mutex_timedlock(&r->lock, &deadline);
	pthread_join(killer, NULL);
	waitpid(pid, &status, 0);
	if (err != EOWNERDEAD)
		return fail("robust: the waiter expected EOWNERDEAD", err);
	if (r->value != 42)
		return fail("robust: the dead owner's write is missing", EIO);
	if ((err = pthread_mutex_consistent(&r->lock)) || (err = pthread_mutex_unlock(&r->lock)))
		return fail("robust: making it consistent", err);
	if ((err = pthread_mutex_lock(&r->lock)) || (err = pthread_mutex_unlock(&r->lock)))
		return fail("robust: locking it again", err);
	printf("mshare-gup: robust owner_killed=%s waiter=EOWNERDEAD value=%d relocked=yes\n",
	       WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL ? "yes" : "no", r->value);
	return 0;
}

#define REMOTE_BYTES (64 * 1024)

/* The second granule's tail, away from the robust mutex: the GUP checks' bytes. */
static char *gup_area(struct shared *s)
{
	return (char *)s + REGION_SIZE - REMOTE_BYTES;
}

static int check_remote(struct shared *s)
{
	static char theirs[REMOTE_BYTES], mine[REMOTE_BYTES];
	int ready[2], done[2];
	uintptr_t child_area;
	pid_t pid;

	if (pipe(ready) < 0 || pipe(done) < 0)
		return fail("pipe", errno);
	for (int i = 0; i < REMOTE_BYTES; i++)
		gup_area(s)[i] = (char)(i * 7 + 1);
	pid = fork();
	if (pid < 0)
		return fail("fork", errno);
	if (pid == 0) {
		struct shared *own = map_own_window(3);
		char byte;

		if (own == MAP_FAILED)
			_exit(fail("remote: child mmap", errno));
		child_area = (uintptr_t)gup_area(own);
		if (write(ready[1], &child_area, sizeof(child_area)) != sizeof(child_area))
			_exit(1);
		/* Stay mapped until the parent is done with this address space. */
		_exit(read(done[0], &byte, 1) == 1 ? 0 : 1);
	}
	if (read(ready[0], &child_area, sizeof(child_area)) != sizeof(child_area))
		return fail("remote: the child never mapped", EIO);
	/* /proc/PID/mem: the kernel takes the child's pages with GUP (access_remote_vm). */
	char mem_path[64];
	ssize_t got = -1;
	int err = 0, mem;

	snprintf(mem_path, sizeof(mem_path), "/proc/%d/mem", (int)pid);
	mem = open(mem_path, O_RDWR);
	if (mem >= 0) {
		got = pread(mem, theirs, REMOTE_BYTES, (off_t)child_area);
		if (got == REMOTE_BYTES) {
			for (int i = 0; i < REMOTE_BYTES; i++)
				mine[i] = (char)(i * 3 + 5);
			got = pwrite(mem, mine, REMOTE_BYTES, (off_t)child_area);
		}
		err = errno;
		close(mem);
	} else {
		err = errno;
	}
	if (write(done[1], "x", 1) != 1 || reap("remote", &pid, 1))
		return 1;
	if (got != REMOTE_BYTES)
		return fail("remote: /proc/PID/mem read/write", got < 0 ? err : EIO);
	if (memcmp(gup_area(s), mine, REMOTE_BYTES) != 0)
		return fail("remote: the bytes written through /proc/PID/mem are not in the region", EIO);
	for (int i = 0; i < REMOTE_BYTES; i++)
		if (theirs[i] != (char)(i * 7 + 1))
			return fail("remote: /proc/PID/mem read other bytes", EIO);
	printf("mshare-gup: remote child_window=%#lx read=%d written=%d\n", (unsigned long)child_area, REMOTE_BYTES,
	       REMOTE_BYTES);
	return 0;
}

static int check_vmsplice(struct shared *s)
{
	static char out[REMOTE_BYTES / 4];
	struct iovec iov = { .iov_base = gup_area(s), .iov_len = sizeof(out) };
	ssize_t spliced, got = 0;
	int pipefd[2];

	if (pipe(pipefd) < 0)
		return fail("pipe", errno);
	memset(gup_area(s), 'a', sizeof(out));
	spliced = vmsplice(pipefd[1], &iov, 1, 0);
	if (spliced != (ssize_t)sizeof(out))
		return fail("vmsplice", spliced < 0 ? errno : EIO);
	/* The pipe holds the region's pages: what is written now is what it gives. */
	memset(gup_area(s), 'b', sizeof(out));
	while (got < spliced) {
		ssize_t n = read(pipefd[0], out + got, sizeof(out) - got);

		if (n <= 0)
			return fail("read from the pipe", n < 0 ? errno : EIO);
		got += n;
	}
	close(pipefd[0]);
	close(pipefd[1]);
	for (size_t i = 0; i < sizeof(out); i++)
		if (out[i] != 'b')
			return fail("vmsplice: the pipe gave a copy, not the region's page", EIO);
	printf("mshare-gup: vmsplice bytes=%zd referenced=yes\n", spliced);
	return 0;
}

static int init_shared(struct shared *s, struct robust *r)
{
	pthread_mutexattr_t shared_attr, robust_attr;
	pthread_condattr_t cond_attr;

	pthread_mutexattr_init(&shared_attr);
	pthread_mutexattr_setpshared(&shared_attr, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_init(&robust_attr);
	pthread_mutexattr_setpshared(&robust_attr, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&robust_attr, PTHREAD_MUTEX_ROBUST);
	pthread_condattr_init(&cond_attr);
	pthread_condattr_setpshared(&cond_attr, PTHREAD_PROCESS_SHARED);
	if (pthread_mutex_init(&s->lock, &shared_attr) || pthread_mutex_init(&s->cond_lock, &shared_attr) ||
	    pthread_cond_init(&s->cond, &cond_attr) || pthread_mutex_init(&s->private_lock, NULL) ||
	    pthread_mutex_init(&r->lock, &robust_attr))
		return fail("pthread init", EINVAL);
	if (sem_init(&s->ping, 1, 0) || sem_init(&s->pong, 1, 0))
		return fail("sem_init", errno);
	return 0;
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/sys/fs/mshare";
	struct mshare_create create = {
		.addr = 0, .size = REGION_SIZE, .prot = PROT_READ | PROT_WRITE,
		.flags = MAP_SHARED | MAP_ANONYMOUS, .fd = -1,
	};
	struct shared *s;
	int fd, failed = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGALRM, timed_out);
	alarm(TIME_LIMIT_S);
	snprintf(path, sizeof(path), "%s/futex-check", dir);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0)
		return fail("open O_CREAT|O_EXCL (is a region of that name left over?)", errno);
	if (ftruncate(fd, REGION_SIZE) < 0)
		return fail("ftruncate", errno);
	if (ioctl(fd, MSHAREFS_CREATE_MAPPING, &create) < 0)
		return fail("MSHAREFS_CREATE_MAPPING", errno);
	s = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (s == MAP_FAILED)
		return fail("mmap", errno);
	close(fd);
	if (init_shared(s, (struct robust *)((char *)s + GRANULE)))
		return 1;

	failed |= check_raw(s);
	failed |= check_mutex(s);
	failed |= check_condvar(s);
	failed |= check_semaphore(s);
	failed |= check_threads(s);
	failed |= check_robust((struct robust *)((char *)s + GRANULE));
	failed |= check_remote(s);
	failed |= check_vmsplice(s);

	munmap(s, REGION_SIZE);
	if (unlink(path) < 0)
		return fail("unlink", errno);
	printf("mshare-gup: %s\n", failed ? "FAILED" : "ok");
	return failed;
}
