/* leaky_server: a tiny stand-in for the seed's vLLM decode worker.
 *
 * Every tick it "receives a KV block": it registers a buffer the way UCX does (the buffer is mmap()ed and,
 * because libucm watches mmap, the call goes program -> libucm -> syscall()), keeps every buffer in an
 * "unreleased" queue that is never drained (UCX_RCACHE_MAX_UNRELEASED=inf), and does ordinary malloc/free
 * work whose heap stays flat.  It prints a heartbeat line per tick, so tests can see it is alive.
 *
 *   leaky_server [--ticks N] [--interval-ms MS] [--block-kb KB] [--linger-ms MS] [--no-ucm]
 *
 * N = 0 (the default) runs until killed.  After N ticks it prints "LEAKED <bytes>" and stays alive for
 * --linger-ms (default 0) so a last snapshot of its maps can be taken.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#ifndef SB_NO_UCM
#include <ucm/api/ucm.h>
static void on_event(ucm_event_type_t type, ucm_event_t *event, void *arg) {
    (void)type; (void)event; (void)arg;
}
#endif

struct block { struct block *next; size_t len; };
static struct block *unreleased;

__attribute__((noinline)) void *register_kv_block(size_t len) {
    struct block *b = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b == MAP_FAILED) return NULL;
    memset(b, 0x5a, len);           /* touch it: it becomes resident, RSS grows */
    b->len = len;
    b->next = unreleased;           /* queued for release that never happens */
    unreleased = b;
    return b;
}

__attribute__((noinline)) void scratch_work(void) {
    void *tmp = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (tmp != MAP_FAILED) { memset(tmp, 1, 1 << 16); munmap(tmp, 1 << 16); }
    char *heap = malloc(4096);
    if (heap) { memset(heap, 2, 4096); free(heap); }
}

__attribute__((noinline)) void decode_step(size_t block) {
    register_kv_block(block);
    scratch_work();
}

int main(int argc, char **argv) {
    long ticks = 0, interval_ms = 50, block_kb = 256, linger_ms = 0;
    int use_ucm = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ticks") && i + 1 < argc) ticks = atol(argv[++i]);
        else if (!strcmp(argv[i], "--interval-ms") && i + 1 < argc) interval_ms = atol(argv[++i]);
        else if (!strcmp(argv[i], "--block-kb") && i + 1 < argc) block_kb = atol(argv[++i]);
        else if (!strcmp(argv[i], "--linger-ms") && i + 1 < argc) linger_ms = atol(argv[++i]);
        else if (!strcmp(argv[i], "--no-ucm")) use_ucm = 0;
        else { fprintf(stderr, "usage: leaky_server [--ticks N] [--interval-ms MS] [--block-kb KB] [--linger-ms MS] [--no-ucm]\n"); return 2; }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
#ifndef SB_NO_UCM
    if (use_ucm && ucm_set_event_handler(UCM_EVENT_MMAP | UCM_EVENT_MUNMAP, 0, on_event, NULL) != UCS_OK)
        fprintf(stderr, "leaky_server: libucm memory events unavailable (UCX_MEM_MMAP_HOOK_MODE=none?); "
                        "going on without them\n");
#else
    (void)use_ucm;
#endif
    struct timespec ts = { interval_ms / 1000, (interval_ms % 1000) * 1000000L };
    for (long n = 1; ticks == 0 || n <= ticks; n++) {
        decode_step((size_t)block_kb * 1024);
        printf("heartbeat %ld\n", n);
        nanosleep(&ts, NULL);
    }
    printf("LEAKED %ld\n", ticks * block_kb * 1024);
    struct timespec linger = { linger_ms / 1000, (linger_ms % 1000) * 1000000L };
    nanosleep(&linger, NULL);
    return 0;
}
