// sigsegv_handler: installs a SIGSEGV handler with sigaction(SA_SIGINFO),
// then faults several times: a write to unmapped 0x10, a read from unmapped
// 0x7000, and a write to a PROT_READ page (SEGV_ACCERR).  The handler
// records si_addr/si_code and siglongjmps back; main prints what the handler
// saw and "recovered" after each fault.  Output is deterministic (addresses
// of the mmap'd page are printed as offsets).  Exit 0 if all three faults
// were caught with the expected addresses and codes, else 1.
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static sigjmp_buf env;
static volatile uintptr_t fault_addr;
static volatile int fault_code, fault_signo, handler_calls;

static void on_segv(int sig, siginfo_t *si, void *uctx)
{
    (void)uctx;
    fault_signo = sig;
    fault_addr = (uintptr_t)si->si_addr;
    fault_code = si->si_code;
    handler_calls++;
    siglongjmp(env, 1);
}

static const char *code_name(int c)
{
    return c == SEGV_MAPERR ? "SEGV_MAPERR" : c == SEGV_ACCERR ? "SEGV_ACCERR" : "other";
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0) { perror("sigaction"); return 1; }

    long pg = sysconf(_SC_PAGESIZE);
    unsigned char *ro = mmap(NULL, (size_t)pg, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ro == MAP_FAILED) { perror("mmap"); return 1; }

    int ok = 1;
    for (int step = 0; step < 3; step++) {
        fault_addr = 0;
        fault_code = 0;
        uintptr_t expect;
        if (sigsetjmp(env, 1) == 0) {
            switch (step) {
            case 0:
                expect = 0x10;
                *(volatile int *)(uintptr_t)0x10 = 1;
                break;
            case 1:
                expect = 0x7000;
                (void)*(volatile int *)(uintptr_t)0x7000;
                break;
            default:
                expect = (uintptr_t)(ro + 100);
                ((volatile unsigned char *)ro)[100] = 1;
                break;
            }
            printf("step %d: no fault?!\n", step);
            ok = 0;
            continue;
        }
        expect = step == 0 ? 0x10 : step == 1 ? 0x7000 : (uintptr_t)(ro + 100);
        int want = step == 2 ? SEGV_ACCERR : SEGV_MAPERR;
        if (step == 2)
            printf("step %d: signal %d si_addr=page+%ld si_code=%s\n", step, fault_signo,
                   (long)(fault_addr - (uintptr_t)ro), code_name(fault_code));
        else
            printf("step %d: signal %d si_addr=%#lx si_code=%s\n", step, fault_signo,
                   (unsigned long)fault_addr, code_name(fault_code));
        if (fault_addr != expect || fault_code != want || fault_signo != SIGSEGV) ok = 0;
        printf("recovered\n");
    }
    /* the mask was restored by siglongjmp: SIGSEGV must not be blocked now */
    sigset_t cur;
    sigprocmask(SIG_BLOCK, NULL, &cur);
    printf("handler calls %d, SIGSEGV blocked after recovery: %s\n", handler_calls,
           sigismember(&cur, SIGSEGV) ? "yes" : "no");
    if (sigismember(&cur, SIGSEGV) || handler_calls != 3) ok = 0;
    munmap(ro, (size_t)pg);
    return ok ? 0 : 1;
}
