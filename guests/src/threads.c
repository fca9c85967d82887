// LDFLAGS: -pthread
// threads: 4 pthreads race on an unprotected shared counter and append their
// id to a shared array without locks; a mutex-protected counter is updated
// too.  Prints the final unprotected counter (may lose updates), the
// protected counter (must be exact), how many ids landed in the array and an
// FNV hash of their order.  Nondeterministic by design (scheduling).
// Exit 1 if the protected counter is wrong or a thread call fails.
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>

#define NTHREADS 4
#define INCREMENTS 50000
#define APPENDS 2000

static volatile long unprotected;
static long protected_count;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int order[NTHREADS * APPENDS];
static volatile int order_len;
static pthread_barrier_t start_barrier;

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    pthread_barrier_wait(&start_barrier);  /* start together so they really race */
    for (int i = 0; i < INCREMENTS; i++) {
        unprotected = unprotected + 1;  /* racy load/add/store */
        if (i % 25 == 0) {
            int pos = order_len;           /* racy append */
            order[pos] = id;
            order_len = pos + 1;
        }
        if (i % 10 == 0) {
            pthread_mutex_lock(&lock);
            protected_count += 10;
            pthread_mutex_unlock(&lock);
        }
        if (i % 5000 == 4999) sched_yield();
    }
    return (void *)(intptr_t)(id * 100);
}

int main(void)
{
    pthread_t th[NTHREADS];
    pthread_barrier_init(&start_barrier, NULL, NTHREADS);
    for (int i = 0; i < NTHREADS; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)(intptr_t)(i + 1)) != 0) {
            printf("pthread_create failed\n");
            return 1;
        }
    int ok = 1;
    for (int i = 0; i < NTHREADS; i++) {
        void *ret;
        if (pthread_join(th[i], &ret) != 0 || (intptr_t)ret != (i + 1) * 100) ok = 0;
    }
    pthread_barrier_destroy(&start_barrier);
    uint64_t h = 0xcbf29ce484222325ULL;
    int counts[NTHREADS + 1] = { 0 };
    int len = order_len;
    for (int i = 0; i < len; i++) {
        h = (h ^ (uint64_t)order[i]) * 0x100000001b3ULL;
        if (order[i] >= 1 && order[i] <= NTHREADS) counts[order[i]]++;
    }
    printf("unprotected %ld (of %d)\n", unprotected, NTHREADS * INCREMENTS);
    printf("protected   %ld (of %d)\n", protected_count, NTHREADS * INCREMENTS);
    printf("appended    %d (of %d) per thread:", len, NTHREADS * APPENDS);
    for (int i = 1; i <= NTHREADS; i++) printf(" %d", counts[i]);
    printf("\norder hash  %016llx\n", (unsigned long long)h);
    printf("joins       %s\n", ok ? "ok" : "FAILED");
    return ok && protected_count == NTHREADS * INCREMENTS ? 0 : 1;
}
