// setjmp: setjmp/longjmp across nested (recursive) calls, longjmp value 0 ->
// 1, nested "try" blocks, callee-saved register preservation, and
// sigsetjmp/siglongjmp with and without saving the signal mask, including
// jumping out of a signal handler (raise(SIGUSR1)).
// Prints each step; exit 1 if any check fails.
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
static void check(int ok, const char *what)
{
    printf("%-44s %s\n", what, ok ? "ok" : "FAIL");
    if (!ok) failures++;
}

static jmp_buf env_a, env_b;
static volatile int depth_reached;

__attribute__((noinline)) static int recurse(int depth, int target, int value)
{
    volatile char pad[64];  /* give each frame some stack */
    pad[depth % 64] = (char)depth;
    depth_reached = depth;
    if (depth == target) longjmp(env_a, value);
    if (depth > 10000) return 0;
    return recurse(depth + 1, target, value) + pad[depth % 64];
}

/* "exception" handling with nested try blocks */
static jmp_buf *handler_stack[16];
static int handler_top;
__attribute__((noinline)) static void throw_exc(int code)
{
    longjmp(*handler_stack[--handler_top], code);
}
__attribute__((noinline)) static int inner_work(int x)
{
    if (x > 3) throw_exc(100 + x);
    return x * 2;
}
static int try_inner(int x, int *caught_inner)
{
    jmp_buf jb;
    int r;
    handler_stack[handler_top++] = &jb;
    if ((r = setjmp(jb)) == 0) {
        int v = inner_work(x);
        handler_top--;
        return v;
    }
    /* rethrow odd codes to the outer handler */
    *caught_inner = r;
    if (r & 1) throw_exc(r + 1000);
    return -r;
}

/* many live values across setjmp in callee-saved registers */
__attribute__((noinline)) static long regs_test(long seed)
{
    jmp_buf jb;
    long a = seed * 3, b = seed * 5, c = seed * 7, d = seed * 11, e = seed * 13, f = seed * 17;
    volatile int pass = 0;
    if (setjmp(jb) == 0) {
        /* clobber lots of registers in a called function, then jump back */
        pass = 1;
        __asm__ volatile("" ::: "rbx", "r12", "r13", "r14", "r15", "memory");
        longjmp(jb, 1);
    }
    return a + b + c + d + e + f + pass;
}

static sigjmp_buf senv;
static volatile sig_atomic_t handler_ran;
static void usr1_handler(int sig)
{
    handler_ran = sig;
    siglongjmp(senv, 77);
}

static int sigusr1_blocked(void)
{
    sigset_t cur;
    sigprocmask(SIG_BLOCK, NULL, &cur);
    return sigismember(&cur, SIGUSR1);
}

int main(void)
{
    volatile int r;

    /* 1. basic */
    r = setjmp(env_a);
    if (r == 0) longjmp(env_a, 5);
    check(r == 5, "longjmp returns value 5");

    /* 2. longjmp(…, 0) makes setjmp return 1 */
    r = setjmp(env_b);
    if (r == 0) longjmp(env_b, 0);
    check(r == 1, "longjmp value 0 becomes 1");

    /* 3. out of deep recursion, several times */
    for (volatile int target = 1; target <= 200; target *= 3) {
        volatile int local = target * 10;
        r = setjmp(env_a);
        if (r == 0) recurse(0, target, target + 1);
        char msg[64];
        snprintf(msg, sizeof msg, "recursion depth %d unwound", target);
        check(r == target + 1 && depth_reached == target && local == target * 10, msg);
    }

    /* 4. nested try/catch with rethrow */
    {
        jmp_buf outer;
        int results[8], n = 0;
        for (volatile int x = 2; x <= 6; x++) {
            int caught_inner = 0;
            handler_stack[handler_top++] = &outer;
            int code = setjmp(outer);
            if (code == 0) {
                int v = try_inner(x, &caught_inner);
                handler_top--;
                results[n++] = v;
            } else {
                results[n++] = code;
            }
        }
        printf("try results:");
        for (int i = 0; i < n; i++) printf(" %d", results[i]);
        printf("\n");
        check(results[0] == 4 && results[1] == 6 && results[2] == -104 && results[3] == 1105 &&
              results[4] == -106 && handler_top == 0, "nested try/rethrow");
    }

    /* 5. callee-saved registers survive setjmp/longjmp */
    {
        long v = regs_test(1000);
        check(v == 1000 * (3 + 5 + 7 + 11 + 13 + 17) + 1, "callee-saved values preserved");
    }

    /* 6. sigsetjmp with savemask=1 restores the mask on siglongjmp */
    {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGUSR1);
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        r = sigsetjmp(senv, 1);
        if (r == 0) {
            sigprocmask(SIG_BLOCK, &set, NULL);
            check(sigusr1_blocked(), "SIGUSR1 blocked before siglongjmp");
            siglongjmp(senv, 3);
        }
        check(r == 3 && !sigusr1_blocked(), "sigsetjmp(,1) restored mask");
    }

    /* 7. sigsetjmp with savemask=0 leaves the mask alone */
    {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGUSR1);
        r = sigsetjmp(senv, 0);
        if (r == 0) {
            sigprocmask(SIG_BLOCK, &set, NULL);
            siglongjmp(senv, 4);
        }
        check(r == 4 && sigusr1_blocked(), "sigsetjmp(,0) kept blocked mask");
        sigprocmask(SIG_UNBLOCK, &set, NULL);
    }

    /* 8. siglongjmp out of a signal handler (mask inside handler blocks SIGUSR1) */
    {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = usr1_handler;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGUSR1, &sa, NULL);
        for (volatile int i = 0; i < 3; i++) {
            handler_ran = 0;
            r = sigsetjmp(senv, 1);
            if (r == 0) {
                raise(SIGUSR1);
                check(0, "raise returned (handler should have jumped)");
            }
            char msg[64];
            snprintf(msg, sizeof msg, "siglongjmp from handler #%d", (int)i);
            check(r == 77 && handler_ran == SIGUSR1 && !sigusr1_blocked(), msg);
        }
    }

    printf("failures %d\n", failures);
    return failures ? 1 : 0;
}
