/* mech: the smallest program for measuring what one GDB breakpoint hit costs (benchmarks/mech/).
 *
 *   mech N [DEPTH] [THREADS]
 *
 * Each of THREADS threads (default 1) recurses DEPTH frames (default 20) through descend() and then calls
 * sb_getppid() N times.  sb_getppid() holds exactly one `syscall` instruction, at the global label sb_site;
 * the instruction after it is sb_after, so a breakpoint can be placed on either by name.  getppid never
 * fails and is cheap, so the native loop costs well under a microsecond per call.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static long n_calls;
static int depth;
static volatile long sink;

__attribute__((noinline)) long sb_getppid(void) {
    long ret;
    __asm__ volatile(".globl sb_site\nsb_site:\n\tsyscall\n.globl sb_after\nsb_after:\n"
                     : "=a"(ret)
                     : "a"(110L)
                     : "rcx", "r11", "memory");
    return ret;
}

__attribute__((noinline)) long descend(int level) {
    if (level > 1) return descend(level - 1) + 1;
    long acc = 0;
    for (long i = 0; i < n_calls; i++) acc += sb_getppid();
    return acc;
}

static void *worker(void *arg) {
    (void)arg;
    sink += descend(depth);
    return NULL;
}

int main(int argc, char **argv) {
    n_calls = argc > 1 ? atol(argv[1]) : 20000;
    depth = argc > 2 ? atoi(argv[2]) : 20;
    int threads = argc > 3 ? atoi(argv[3]) : 1;
    if (threads <= 1) {
        worker(NULL);
    } else {
        pthread_t tid[64];
        if (threads > 64) threads = 64;
        for (int t = 0; t < threads; t++) pthread_create(&tid[t], NULL, worker, NULL);
        for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
    }
    printf("done %ld\n", sink);
    return 0;
}
