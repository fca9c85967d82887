// LDFLAGS: -pthread
// manythreads: creates threads (small stacks) that all wait on one condition
// variable, until pthread_create fails or MAX threads exist; then releases
// and joins them all.  Prints how many were created and the error that
// stopped it ("none" when MAX was reached).  While threads are created the
// others run, block and wake, so a preemption timer sees the thread list
// change under it.  Exit 0 if every created thread ran and was joined.
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX 6000

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t go = PTHREAD_COND_INITIALIZER;
static int released;
static int started;
static pthread_t ids[MAX];

static void *worker(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&lock);
    started++;
    while (!released) pthread_cond_wait(&go, &lock);
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(void)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    int n = 0, err = 0;
    while (n < MAX) {
        err = pthread_create(&ids[n], &attr, worker, NULL);
        if (err != 0) break;
        n++;
    }
    pthread_mutex_lock(&lock);
    released = 1;
    pthread_cond_broadcast(&go);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < n; i++) pthread_join(ids[i], NULL);
    printf("created %d threads; stopped by %s\n", n, err == 0 ? "none" : err == EAGAIN ? "EAGAIN" : strerror(err));
    printf("all %d ran and were joined: %s\n", started, started == n ? "yes" : "no");
    return started == n ? 0 : 1;
}
