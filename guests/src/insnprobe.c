// insnprobe: executes each instruction given as hex bytes on the command line (e.g. "0f 01 f8" or "0f01f8")
// from a fresh executable page, with rax = 0x1234 on entry, and prints what happened: either the rax left
// behind, or the signal with its si_code, si_addr (as "0" or an offset into the page) and the faulting rip.
// The differential test runs it natively and in the VM and compares the output line by line.
// CFLAGS: -mno-red-zone
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

static sigjmp_buf env;
static volatile int got_sig, got_code;
static volatile uintptr_t got_addr, got_rip;

static void on_signal(int sig, siginfo_t *si, void *uc)
{
    got_sig = sig;
    got_code = si->si_code;
    got_addr = (uintptr_t)si->si_addr;
    got_rip = (uintptr_t)((ucontext_t *)uc)->uc_mcontext.gregs[REG_RIP];
    siglongjmp(env, 1);
}

static int parse_hex(const char *s, unsigned char *out, int max)
{
    int n = 0, half = -1;
    for (; *s; s++) {
        int v;
        if (*s >= '0' && *s <= '9') v = *s - '0';
        else if (*s >= 'a' && *s <= 'f') v = *s - 'a' + 10;
        else if (*s >= 'A' && *s <= 'F') v = *s - 'A' + 10;
        else continue;
        if (half < 0) half = v;
        else { if (n == max) return -1; out[n++] = (unsigned char)(half << 4 | v); half = -1; }
    }
    return half < 0 ? n : -1;
}

static void describe(uintptr_t v, uintptr_t page, char *buf, size_t len)
{
    if (v >= page && v < page + 4096) snprintf(buf, len, "page+%lu", (unsigned long)(v - page));
    else snprintf(buf, len, "%#lx", (unsigned long)v);
}

int main(int argc, char **argv)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    int sigs[] = { SIGSEGV, SIGILL, SIGBUS, SIGTRAP, SIGFPE };
    for (unsigned k = 0; k < sizeof sigs / sizeof sigs[0]; k++) sigaction(sigs[k], &sa, NULL);

    unsigned char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) { perror("mmap"); return 1; }
    for (int a = 1; a < argc; a++) {
        unsigned char bytes[32];
        int n = parse_hex(argv[a], bytes, 31);
        if (n < 0) { printf("%s: bad hex\n", argv[a]); continue; }
        memset(page, 0xcc, 4096);
        memcpy(page, bytes, (size_t)n);
        page[n] = 0xc3; /* ret */
        got_sig = 0;
        if (sigsetjmp(env, 1) == 0) {
            register uint64_t rax __asm__("rax") = 0x1234;
            __asm__ volatile("call *%1"
                             : "+r"(rax)
                             : "r"(page)
                             : "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "memory", "cc");
            printf("%s: ok rax=%#lx\n", argv[a], (unsigned long)rax);
        } else {
            char addr[40], rip[40];
            describe(got_addr, (uintptr_t)page, addr, sizeof addr);
            describe(got_rip, (uintptr_t)page, rip, sizeof rip);
            printf("%s: signal %d code %d addr %s rip %s\n", argv[a], got_sig, got_code, addr, rip);
        }
        fflush(stdout);
    }
    return 0;
}
