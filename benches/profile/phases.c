// Where the time of a one-at-a-time command goes inside a process, read from the system calls it
// makes: an LD_PRELOAD shim for `benches/profile/one-at-a-time.sh` (see docs/benchmarks.md).
//
// A cycle starts when a read() on fd 0 returns bytes (a request came in) and ends when the
// process writes a reply (a write() on a descriptor above 2 whose text starts with '{') after
// at least one fdatasync. Per cycle it takes: the time until the first pwrite (parsing, the
// aggregate, the SQL, SQLite's commit up to its first WAL write), the pwrites and the time
// between them, the fdatasyncs, and the time from the last fdatasync to the reply. Cycles with
// one fdatasync are the ordinary commands; cycles with more are listed one by one (SQLite's
// checkpoints, the WAL's growth). The `init` reply's cycle (the store's opening) is left out.
// At exit it appends a summary to the file named by PHASES_OUT (standard error without it).
//
// Only for a process that handles one request at a time on one thread: nothing here is
// thread-safe, and streamed input would make one cycle of many requests.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

// The cycle in progress.
static int open_cycle, writes, syncs;
static double t_read, t_first_write, t_first_sync, t_last_sync_end, write_time, sync_time;

// Ordinary commands (one fdatasync).
static long n;
static double s_work, s_span, s_write_time, s_sync, s_after, s_total;
static long s_writes;

// The others.
#define MAX_LISTED 64
static long n_more, listed;
static double s_more_total, s_more_sync;
static char list[MAX_LISTED][80];

#define REAL(ret, name, ...)                                                                       \
    static ret (*real)(__VA_ARGS__);                                                               \
    if (!real) real = (ret(*)(__VA_ARGS__))dlsym(RTLD_NEXT, name)

ssize_t read(int fd, void *buf, size_t count) {
    REAL(ssize_t, "read", int, void *, size_t);
    ssize_t r = real(fd, buf, count);
    if (fd == 0 && r > 0) {
        open_cycle = 1;
        t_read = now_us();
        t_first_write = t_first_sync = 0;
        writes = syncs = 0;
        write_time = sync_time = 0;
    }
    return r;
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t off) {
    REAL(ssize_t, "pwrite64", int, const void *, size_t, off_t);
    double a = now_us();
    ssize_t r = real(fd, buf, count, off);
    if (open_cycle) {
        if (!t_first_write) t_first_write = a;
        writes++;
        write_time += now_us() - a;
    }
    return r;
}

int fdatasync(int fd) {
    REAL(int, "fdatasync", int);
    double a = now_us();
    int r = real(fd);
    double b = now_us();
    if (open_cycle) {
        if (!t_first_sync) t_first_sync = a;
        syncs++;
        sync_time += b - a;
        t_last_sync_end = b;
    }
    return r;
}

ssize_t write(int fd, const void *buf, size_t count) {
    REAL(ssize_t, "write", int, const void *, size_t);
    if (open_cycle && fd > 2 && syncs > 0 && count > 0 && ((const char *)buf)[0] == '{') {
        double t = now_us();
        open_cycle = 0;
        if (memmem(buf, count, "\"init_ok\"", 9)) {
            // the store's opening: measured elsewhere
        } else if (syncs == 1 && t_first_write) {
            n++;
            s_work += t_first_write - t_read;
            s_span += t_first_sync - t_first_write;
            s_writes += writes;
            s_write_time += write_time;
            s_sync += sync_time;
            s_after += t - t_last_sync_end;
            s_total += t - t_read;
        } else {
            if (listed < MAX_LISTED)
                snprintf(list[listed++], sizeof list[0], "#%ld: %d fdatasyncs %.0f us, %d pwrites, %.0f us",
                         n + n_more, syncs, sync_time, writes, t - t_read);
            n_more++;
            s_more_total += t - t_read;
            s_more_sync += sync_time;
        }
    }
    return real(fd, buf, count);
}

__attribute__((destructor)) static void report(void) {
    if (!n) return;
    const char *path = getenv("PHASES_OUT");
    FILE *f = path ? fopen(path, "a") : stderr;
    if (!f) return;
    fprintf(f, "%ld commands with one fdatasync, mean per command (us):\n", n);
    fprintf(f, "  request read -> first pwrite   %7.1f  (parse, aggregate, SQL, commit up to its first write)\n", s_work / n);
    fprintf(f, "  first pwrite -> fdatasync      %7.1f  (%.1f pwrites, %.1f us inside them)\n", s_span / n,
            (double)s_writes / n, s_write_time / n);
    fprintf(f, "  fdatasync                      %7.1f\n", s_sync / n);
    fprintf(f, "  fdatasync -> reply written     %7.1f\n", s_after / n);
    fprintf(f, "  total in the process           %7.1f\n", s_total / n);
    if (n_more) {
        fprintf(f, "%ld commands with more than one fdatasync: mean %.1f us (%.1f in fdatasync); "
                   "their time beyond an ordinary command, over all %ld commands: %.1f us each\n",
                n_more, s_more_total / n_more, s_more_sync / n_more, n + n_more,
                (s_more_total - n_more * s_total / n) / (n + n_more));
        for (long i = 0; i < listed; i++) fprintf(f, "  %s\n", list[i]);
    }
    if (path) fclose(f);
}
