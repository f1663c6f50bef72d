/* SPDX-License-Identifier: MIT */
/* Plumbing for tether_bench and the peers in peers/; see bench_common.h.
 * Every implementation uses it, so each is timed, verified and reported
 * exactly like the others (PROTOCOL.md). */
#include "bench_common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef BENCH_CERT_DIR
#define BENCH_CERT_DIR "certs"
#endif

struct bench_opts O;
unsigned bench_caps;

static const char *prog = "bench"; /* argv[0]'s last component, for usage */

static pid_t child_pid = -1; /* parent: the server; child: -1 */
static bool in_child;
static volatile sig_atomic_t finishing;
static volatile sig_atomic_t reaped;
static int ctl_pipe[2] = {-1, -1};  /* child writes, parent reads */
static int stop_pipe[2] = {-1, -1}; /* the parent closes its end: "stop" */
static unsigned timeout_s = 60;

const char *bench_scenario_name(enum bench_scenario s)
{
    switch (s) {
    case SC_THR:
        return "thr";
    case SC_LAT:
        return "lat";
    case SC_HS:
        return "hs";
    case SC_CONNS:
        return "conns";
    case SC_FANIN:
        return "fanin";
    }
    return "?";
}

const char *bench_transport_name(enum bench_transport t)
{
    static const char *const names[] = {"tcp", "tls", "ws", "wss"};
    return names[t];
}

static void vlog(const char *fmt, va_list ap)
{
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "%s%s: ", O.impl != NULL ? O.impl : "bench",
                     in_child ? " (server)" : "");
    if (n < 0) {
        n = 0;
    }
    if ((size_t)n < sizeof buf) {
        vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    }
    fprintf(stderr, "%s\n", buf);
    fflush(stderr);
}

void bench_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
}

static void kill_child(void)
{
    if (!in_child && child_pid > 0 && !reaped) {
        int st;
        kill(child_pid, SIGKILL);
        while (waitpid(child_pid, &st, 0) < 0 && errno == EINTR) {
        }
        reaped = 1;
    }
}

noreturn void bench_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
    if (in_child) {
        _exit(1);
    }
    finishing = 1; /* the SIGCHLD handler must not race us */
    kill_child();
    _exit(1);
}

static noreturn void die_errno(const char *what)
{
    bench_die("%s: %s", what, strerror(errno));
}

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double bench_now_s(void)
{
    return (double)bench_now_ns() / 1e9;
}

/* ---- command line ------------------------------------------------------ */

static noreturn void usage(const char *msg)
{
    if (msg != NULL) {
        fprintf(stderr, "%s: %s\n", prog, msg);
    }
    fprintf(stderr,
            "usage: %s --scenario thr|lat|hs|conns|fanin --transport tcp|tls|ws|wss\n"
            "          [--size BYTES] [--count N] [--conns K] [--loops N]\n"
            "          [--cert PEM --key PEM --ca PEM] [--resume]\n"
            "env: BENCH_TIMEOUT_S (default 60): the whole run is killed after it\n",
            prog);
    exit(2);
}

static long parse_long(const char *flag, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        char m[256];
        snprintf(m, sizeof m, "bad value for %s: '%s' (%ld..%ld)", flag, s, lo, hi);
        usage(m);
    }
    return v;
}

void bench_parse_args(int argc, char **argv, const char *impl)
{
    bool have_scen = false;
    bool have_tr = false;
    long size = -1;
    long count = -1;
    long conns = -1;

    O.impl = impl;
    O.loops = 1;
    if (argc > 0 && argv[0] != NULL && argv[0][0] != '\0') {
        const char *slash = strrchr(argv[0], '/');
        prog = slash != NULL && slash[1] != '\0' ? slash + 1 : argv[0];
    }
    O.cert = BENCH_CERT_DIR "/server.pem";
    O.key = BENCH_CERT_DIR "/server.key";
    O.ca = BENCH_CERT_DIR "/ca.pem";

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = NULL;
        char name[32];
        const char *eq = strchr(a, '=');
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(NULL);
        }
        if (strncmp(a, "--", 2) != 0) {
            usage("unexpected argument");
        }
        if (strcmp(a, "--resume") == 0) {
            O.resume = true;
            continue;
        }
        if (eq != NULL) {
            size_t l = (size_t)(eq - a);
            if (l >= sizeof name) {
                usage("unknown flag");
            }
            memcpy(name, a, l);
            name[l] = '\0';
            v = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
            if (i + 1 >= argc) {
                usage("flag needs a value");
            }
            v = argv[++i];
        }
        if (strcmp(name, "--scenario") == 0) {
            have_scen = true;
            if (strcmp(v, "thr") == 0) {
                O.scenario = SC_THR;
            } else if (strcmp(v, "lat") == 0) {
                O.scenario = SC_LAT;
            } else if (strcmp(v, "hs") == 0) {
                O.scenario = SC_HS;
            } else if (strcmp(v, "conns") == 0) {
                O.scenario = SC_CONNS;
            } else if (strcmp(v, "fanin") == 0) {
                O.scenario = SC_FANIN;
            } else {
                usage("unknown scenario");
            }
        } else if (strcmp(name, "--transport") == 0) {
            have_tr = true;
            if (strcmp(v, "tcp") == 0) {
                O.transport = TR_TCP;
            } else if (strcmp(v, "tls") == 0) {
                O.transport = TR_TLS;
            } else if (strcmp(v, "ws") == 0) {
                O.transport = TR_WS;
            } else if (strcmp(v, "wss") == 0) {
                O.transport = TR_WSS;
            } else {
                usage("unknown transport");
            }
        } else if (strcmp(name, "--size") == 0) {
            size = parse_long(name, v, 1, 256L << 20);
        } else if (strcmp(name, "--count") == 0) {
            count = parse_long(name, v, 1, 1000000000L);
        } else if (strcmp(name, "--conns") == 0) {
            conns = parse_long(name, v, 1, 1000000L);
        } else if (strcmp(name, "--loops") == 0) {
            O.loops = parse_long(name, v, 1, 1024);
        } else if (strcmp(name, "--cert") == 0) {
            O.cert = v;
        } else if (strcmp(name, "--key") == 0) {
            O.key = v;
        } else if (strcmp(name, "--ca") == 0) {
            O.ca = v;
        } else {
            usage("unknown flag");
        }
    }
    if (!have_scen || !have_tr) {
        usage("--scenario and --transport are required");
    }
    if (O.transport >= TR_WS && strcmp(impl, "tether") != 0) {
        usage("--transport ws and wss: only tether_bench speaks WebSocket");
    }
    O.size = size > 0 ? (size_t)size : 64;
    if (count > 0) {
        O.count = count;
    } else {
        O.count = O.scenario == SC_THR || O.scenario == SC_FANIN ? 1000000
                  : O.scenario == SC_LAT                         ? 20000
                  : O.scenario == SC_HS                          ? 2000
                                                                 : 0;
    }
    O.conns = conns > 0 ? conns : O.scenario == SC_FANIN ? 16 : 10000;
    if (O.loops > 1 && O.scenario != SC_FANIN) {
        usage("--loops applies to --scenario fanin");
    }

    const char *t = getenv("BENCH_TIMEOUT_S");
    if (t != NULL && *t != '\0') {
        long tv = strtol(t, NULL, 10);
        if (tv > 0 && tv < 100000) {
            timeout_s = (unsigned)tv;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (O.resume && !(bench_caps & BENCH_CAP_RESUME)) {
        fprintf(stderr, "%s: --resume is tether_bench's own flag (TLS session resumption)\n", prog);
        exit(2);
    }
    if (O.scenario == SC_FANIN && !(bench_caps & BENCH_CAP_FANIN)) {
        bench_emit_skip("no fanin scenario");
        exit(0);
    }
    if (O.loops > 1 && !(bench_caps & BENCH_CAP_LOOPS)) {
        bench_emit_skip("no --loops");
        exit(0);
    }
}

long bench_lat_warmup(void)
{
    long w = O.count / 10;
    return w > 1000 ? 1000 : w;
}

void bench_run_client(const struct bench_client *cl)
{
    switch (O.scenario) {
    case SC_THR:
        cl->thr();
        break;
    case SC_LAT:
        cl->lat();
        break;
    case SC_HS:
        cl->hs();
        break;
    case SC_CONNS:
        cl->conns();
        break;
    case SC_FANIN:
        break; /* not run here: bench_parse_args() printed a skip */
    }
}

/* ---- server child -------------------------------------------------------- */

/* Async-signal-safe helpers for the signal handlers. */
static void fmt_num(char *p, long v)
{
    char tmp[24];
    int n = 0;
    bool neg = v < 0;
    unsigned long u = neg ? (unsigned long)(-v) : (unsigned long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0 && n < 22);
    if (neg) {
        *p++ = '-';
    }
    while (n > 0) {
        *p++ = tmp[--n];
    }
    *p = '\0';
}

static void safe_write2(const char *a, const char *b)
{
    ssize_t r = write(2, O.impl, strlen(O.impl));
    r = write(2, a, strlen(a));
    if (b != NULL) {
        r = write(2, b, strlen(b));
    }
    r = write(2, "\n", 1);
    (void)r;
}

static void on_alarm(int sig)
{
    (void)sig;
    char n[24];
    fmt_num(n, (long)timeout_s);
    safe_write2(": timed out after (s) ", n);
    finishing = 1;
    if (child_pid > 0 && !reaped) {
        int st;
        kill(child_pid, SIGKILL);
        waitpid(child_pid, &st, 0);
    }
    _exit(124);
}

static void on_chld(int sig)
{
    (void)sig;
    int saved = errno;
    int st;
    if (!finishing && child_pid > 0 && !reaped) {
        pid_t p = waitpid(child_pid, &st, WNOHANG);
        if (p == child_pid) {
            char n[24];
            reaped = 1;
            if (WIFEXITED(st)) {
                fmt_num(n, WEXITSTATUS(st));
            } else {
                fmt_num(n, -(long)WTERMSIG(st));
            }
            safe_write2(": server exited early, status ", n);
            _exit(1);
        }
    }
    errno = saved;
}

static uint32_t get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

int bench_spawn_server(bench_server_fn fn)
{
    if (pipe2(ctl_pipe, O_CLOEXEC) < 0 || pipe2(stop_pipe, O_CLOEXEC) < 0) {
        die_errno("pipe");
    }
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        die_errno("fork");
    }
    if (pid == 0) {
        in_child = true;
        child_pid = -1;
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent) {
            _exit(1);
        }
        signal(SIGALRM, SIG_DFL);
        alarm(timeout_s + 5); /* backstop: the default action kills us */
        close(ctl_pipe[0]);
        close(stop_pipe[1]);
        dup2(2, 1); /* the JSON line belongs to the parent alone */
        int rc = fn();
        fflush(stdout);
        fflush(stderr);
        _exit(rc);
    }
    child_pid = pid;
    close(ctl_pipe[1]);
    close(stop_pipe[0]);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    sa.sa_handler = on_chld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    alarm(timeout_s);

    uint8_t b[4];
    size_t got = 0;
    while (got < 4) {
        ssize_t r = read(ctl_pipe[0], b + got, 4 - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            bench_die("server did not start");
        }
        got += (size_t)r;
    }
    int fl = fcntl(ctl_pipe[0], F_GETFL);
    fcntl(ctl_pipe[0], F_SETFL, fl | O_NONBLOCK);
    return (int)get_be32(b);
}

static void write_all_fd(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t r = write(fd, c, n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            die_errno("control pipe write");
        }
        c += r;
        n -= (size_t)r;
    }
}

void bench_ctl_send_port(int port)
{
    uint8_t b[4] = {(uint8_t)(port >> 24), (uint8_t)(port >> 16), (uint8_t)(port >> 8),
                    (uint8_t)port};
    write_all_fd(ctl_pipe[1], b, 4);
}

void bench_ctl_notify(void)
{
    write_all_fd(ctl_pipe[1], "c", 1);
}

void bench_server_wait_stop(void)
{
    char b[16];
    for (;;) {
        ssize_t r = read(stop_pipe[0], b, sizeof b);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return;
        }
    }
}

long bench_ctl_read_nb(void)
{
    char b[4096];
    long total = 0;
    for (;;) {
        ssize_t r = read(ctl_pipe[0], b, sizeof b);
        if (r > 0) {
            total += r;
            continue;
        }
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0 && errno == EAGAIN) {
            return total;
        }
        if (r == 0) {
            bench_die("server closed the control pipe");
        }
        die_errno("control pipe read");
    }
}

long bench_ctl_read_block(void)
{
    for (;;) {
        struct pollfd p = {.fd = ctl_pipe[0], .events = POLLIN};
        int r = poll(&p, 1, -1);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            die_errno("poll");
        }
        long n = bench_ctl_read_nb();
        if (n > 0) {
            return n;
        }
    }
}

void bench_conns_open_confirmed(long n, void (*open_one)(long i, void *ud), void *ud)
{
    long opened = 0;
    long confirmed = 0;
    while (confirmed < n) {
        while (opened < n && opened - confirmed < CONNS_WINDOW) {
            open_one(opened++, ud);
        }
        confirmed += bench_ctl_read_block();
        if (confirmed > n) {
            bench_die("more confirmations than connections");
        }
    }
}

void bench_finish_server(void)
{
    int st = 0;
    finishing = 1;
    if (reaped) {
        bench_die("server already gone");
    }
    close(stop_pipe[1]);
    /* Bounded wait: 15 s, then kill. */
    for (int i = 0; i < 15000; i++) {
        pid_t p = waitpid(child_pid, &st, WNOHANG);
        if (p == child_pid) {
            reaped = 1;
            break;
        }
        if (p < 0 && errno != EINTR) {
            die_errno("waitpid");
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    if (!reaped) {
        bench_die("server did not exit after stop");
    }
    alarm(0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        if (WIFSIGNALED(st)) {
            bench_die("server killed by signal %d", WTERMSIG(st));
        }
        bench_die("server failed (exit %d)", WEXITSTATUS(st));
    }
    close(ctl_pipe[0]);
}

long bench_server_rss_kib(void)
{
    char path[64];
    char line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)child_pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        die_errno("open /proc/<server>/status");
    }
    long kib = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    if (kib < 0) {
        bench_die("no VmRSS for the server");
    }
    return kib;
}

/* ---- misc ------------------------------------------------------------------ */

void bench_raise_nofile(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        die_errno("getrlimit");
    }
    if ((long)rl.rlim_cur >= need) {
        return;
    }
    if ((long)rl.rlim_max < need) {
        rl.rlim_max = (rlim_t)need;
    }
    rl.rlim_cur = (rlim_t)need;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
        bench_die("cannot raise RLIMIT_NOFILE to %ld: %s", need, strerror(errno));
    }
}

void *bench_xmalloc(size_t n)
{
    void *p = malloc(n != 0 ? n : 1);
    if (p == NULL) {
        bench_die("out of memory (%zu bytes)", n);
    }
    return p;
}

void bench_fill_payload(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)(i * 131u + 7u);
    }
}

/* ---- output ---------------------------------------------------------------- */

static void emit(const char *metrics, const char *extra)
{
    char head[512];
    int n = snprintf(head, sizeof head,
                     "{\"impl\":\"%s\",\"scenario\":\"%s\",\"transport\":\"%s\","
                     "\"size\":%zu,\"count\":%ld",
                     O.impl, bench_scenario_name(O.scenario), bench_transport_name(O.transport),
                     O.size, O.scenario == SC_CONNS ? O.conns : O.count);
    if (n < 0) {
        n = 0;
    }
    if (O.scenario == SC_CONNS && (size_t)n < sizeof head) {
        snprintf(head + n, sizeof head - (size_t)n, ",\"conns\":%ld", O.conns);
    } else if (O.scenario == SC_FANIN && (size_t)n < sizeof head) {
        snprintf(head + n, sizeof head - (size_t)n, ",\"conns\":%ld,\"loops\":%ld", O.conns,
                 O.loops);
    }
    printf("%s%s%s%s%s}\n", head, metrics != NULL && *metrics != '\0' ? "," : "",
           metrics != NULL ? metrics : "", extra != NULL && *extra != '\0' ? "," : "",
           extra != NULL ? extra : "");
    fflush(stdout);
}

void bench_emit_thr(double el, const char *extra)
{
    char m[256];
    snprintf(m, sizeof m, "\"msgs_per_s\":%.6g,\"mb_per_s\":%.6g,\"elapsed_s\":%.6g",
             (double)O.count / el, (double)O.count * (double)O.size / el / 1e6, el);
    emit(m, extra);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted samples. */
static double pct(const double *s, long n, double p)
{
    long k = (long)(p * (double)n + 0.999999999);
    if (k < 1) {
        k = 1;
    }
    if (k > n) {
        k = n;
    }
    return s[k - 1];
}

void bench_emit_lat(double *rtt, long n, const char *extra)
{
    char m[256];
    double sum = 0;
    qsort(rtt, (size_t)n, sizeof *rtt, cmp_double);
    for (long i = 0; i < n; i++) {
        sum += rtt[i];
    }
    snprintf(m, sizeof m, "\"p50_us\":%.6g,\"p99_us\":%.6g,\"mean_us\":%.6g,\"elapsed_s\":%.6g",
             pct(rtt, n, 0.50), pct(rtt, n, 0.99), sum / (double)n, sum / 1e6);
    emit(m, extra);
}

void bench_emit_hs(double el, long n, const char *extra)
{
    char m[256];
    snprintf(m, sizeof m, "\"conns_per_s\":%.6g,\"elapsed_s\":%.6g", (double)n / el, el);
    emit(m, extra);
}

void bench_emit_conns(double setup_s, double rss, double rss_echo, double echo_s, const char *extra)
{
    char m[384];
    snprintf(m, sizeof m,
             "\"setup_s\":%.6g,\"server_rss_kib_per_conn\":%.6g,"
             "\"server_rss_kib_per_conn_echoed\":%.6g,\"echo_all_s\":%.6g",
             setup_s, rss, rss_echo, echo_s);
    emit(m, extra);
}

void bench_emit_fanin(double el, long client_loops, const char *extra)
{
    char m[256];
    snprintf(m, sizeof m,
             "\"msgs_per_s\":%.6g,\"mb_per_s\":%.6g,\"elapsed_s\":%.6g,\"client_loops\":%ld",
             (double)O.count / el, (double)O.count * (double)O.size / el / 1e6, el, client_loops);
    emit(m, extra);
}

void bench_emit_skip(const char *why)
{
    char m[256];
    snprintf(m, sizeof m, "\"skip\":\"%s\"", why);
    emit(m, NULL);
}
