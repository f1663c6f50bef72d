/* SPDX-License-Identifier: MIT */
/* Service discovery through DNS SRV (tcp+srv://, tls+srv://): the RFC 2782
 * order with an injected random source and the TTL walk over raw answers,
 * without sockets; then dials against a real DNS server (dnsmasq, started
 * by each test on a loopback port) publishing tether listeners on
 * 127.0.0.1: the weighted distribution of 1 000 connections, priorities,
 * failover, errors, TLS names, and a reconnecting client following DNS as
 * servers are added and removed. Nothing leaves the host. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dns_helpers.h"
#include "dns_srv.h"
#include "helpers.h"

#ifndef TETHER_CERTS_DIR
#error "TETHER_CERTS_DIR must name the certs/ directory"
#endif

/* ---- the order, without sockets -------------------------------------------- */

/* Returns the scripted numbers in turn. */
struct script {
    const uint64_t *v;
    size_t n;
    size_t i;
};

static uint64_t script_rnd(void *ud)
{
    struct script *s = ud;
    ck_assert_msg(s->i < s->n, "the order asked for more random numbers than scripted");
    return s->v[s->i++];
}

static struct tether__srv_target T(const char *host, int prio, int weight) {
    struct tether__srv_target t;
    memset(&t, 0, sizeof t);
    snprintf(t.host, sizeof t.host, "%s", host);
    t.priority = (uint16_t)prio;
    t.weight = (uint16_t)weight;
    t.port = 1;
    return t;
}

START_TEST(order_priority_then_weight)
{
    /* c has the lowest priority value, so it comes first whatever the
     * weights; then the priority-1 group: zero weight (d) first in the
     * running sums, then a (10), b (20); sum 30, r in [0, 30]. */
    struct tether__srv_target t[] = {T("a", 1, 10), T("b", 1, 20), T("c", 0, 0), T("d", 1, 0),
                                     T("e", 2, 5)};
    /* r = 11 picks b (sums 0, 10, 30); then sum 10: r = 10 picks a;
     * then only d is left. Group of e: one record, no number drawn. */
    static const uint64_t v[] = {11, 10};
    struct script s = {v, 2, 0};
    tether__srv_order(t, 5, script_rnd, &s);
    const char *want[] = {"c", "b", "a", "d", "e"};
    for (int i = 0; i < 5; i++) {
        ck_assert_str_eq(t[i].host, want[i]);
    }
    ck_assert_uint_eq(s.i, 2);

    /* r = 0 picks the zero weight (its running sum is 0 >= 0). The number
     * is reduced modulo sum + 1, so 31 is 0 as well. */
    struct tether__srv_target u[] = {T("a", 1, 10), T("b", 1, 20), T("d", 1, 0)};
    static const uint64_t w[] = {31, 5};
    struct script s2 = {w, 2, 0};
    tether__srv_order(u, 3, script_rnd, &s2);
    ck_assert_str_eq(u[0].host, "d");
    ck_assert_str_eq(u[1].host, "a"); /* sum 30, r = 5: a */
    ck_assert_str_eq(u[2].host, "b");
}
END_TEST

/* Over every possible number, the first pick of each record is exactly
 * proportional to its weight (plus the number 0, which goes to the first
 * record in the running sums: RFC 2782's algorithm as written). */
START_TEST(order_first_pick_follows_weights)
{
    const struct tether__srv_target in[] = {T("a", 7, 60), T("b", 7, 30), T("c", 7, 10),
                                            T("z", 7, 0)};
    int count[4] = {0};
    for (uint64_t r = 0; r <= 100; r++) {
        struct tether__srv_target t[4];
        memcpy(t, in, sizeof t);
        uint64_t v[3] = {r, 0, 0};
        struct script s = {v, 3, 0};
        tether__srv_order(t, 4, script_rnd, &s);
        for (int k = 0; k < 4; k++) {
            if (strcmp(t[0].host, in[k].host) == 0) {
                count[k]++;
            }
        }
    }
    ck_assert_int_eq(count[0], 60);
    ck_assert_int_eq(count[1], 30);
    ck_assert_int_eq(count[2], 10);
    ck_assert_int_eq(count[3], 1); /* the zero weight: only r = 0 */
}
END_TEST

START_TEST(order_all_zero_weights_shuffled)
{
    /* Zero weights are shuffled (Fisher-Yates), so an all-zero group is
     * spread evenly: over every pair of shuffle numbers (3 x 2), the six
     * orders are all different and each record comes first twice. */
    int first[3] = {0};
    char seen[6][4];
    int k = 0;
    for (uint64_t r1 = 0; r1 < 3; r1++) {
        for (uint64_t r2 = 0; r2 < 2; r2++) {
            struct tether__srv_target t[] = {T("x", 0, 0), T("y", 0, 0), T("z", 0, 0)};
            uint64_t v[] = {r1, r2, 0, 0}; /* two shuffle steps, two selections */
            struct script s = {v, 4, 0};
            tether__srv_order(t, 3, script_rnd, &s);
            ck_assert_uint_eq(s.i, 4);
            first[t[0].host[0] - 'x']++;
            snprintf(seen[k], sizeof seen[k], "%c%c%c", t[0].host[0], t[1].host[0], t[2].host[0]);
            for (int j = 0; j < k; j++) {
                ck_assert_str_ne(seen[j], seen[k]);
            }
            k++;
        }
    }
    ck_assert_int_eq(first[0], 2);
    ck_assert_int_eq(first[1], 2);
    ck_assert_int_eq(first[2], 2);
}
END_TEST

/* An answer record whose owner is a pointer to offset 12. */
static size_t put_rr(uint8_t *p, int type, uint32_t ttl, const uint8_t *rdata, size_t rdlen)
{
    size_t o = 0;
    p[o++] = 0xc0;
    p[o++] = 12;
    p[o++] = (uint8_t)(type >> 8);
    p[o++] = (uint8_t)type;
    p[o++] = 0;
    p[o++] = 1;
    p[o++] = (uint8_t)(ttl >> 24);
    p[o++] = (uint8_t)(ttl >> 16);
    p[o++] = (uint8_t)(ttl >> 8);
    p[o++] = (uint8_t)ttl;
    p[o++] = (uint8_t)(rdlen >> 8);
    p[o++] = (uint8_t)rdlen;
    memcpy(p + o, rdata, rdlen);
    return o + rdlen;
}

START_TEST(min_ttl_of_raw_answers)
{
    uint8_t m[512] = {0x12, 0x34, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0};
    size_t o = 12 + th_dns_put_name(m + 12, "_svc._tcp.test");
    m[o++] = 0;
    m[o++] = 33;
    m[o++] = 0;
    m[o++] = 1;
    uint8_t srv[64] = {0, 1, 0, 5, 0x1b, 0x59};
    size_t sl = 6 + th_dns_put_name(srv + 6, "a.test");
    uint8_t a[4] = {127, 0, 0, 1};
    o += put_rr(m + o, 33, 300, srv, sl);
    o += put_rr(m + o, 1, 7, a, 4); /* not SRV: its TTL does not count */
    o += put_rr(m + o, 33, 60, srv, sl);
    ck_assert_int_eq(tether__srv_min_ttl(m, o), 60);
    /* Cut anywhere inside the records: malformed. */
    for (size_t cut = 12; cut < o; cut++) {
        ck_assert_int_eq(tether__srv_min_ttl(m, cut), -1);
    }
    /* No SRV record at all. */
    m[7] = 0;
    ck_assert_int_eq(tether__srv_min_ttl(m, o), -1);
    /* A TTL with the top bit set counts as 0 (RFC 2181). */
    m[7] = 1;
    size_t o2 = 12 + th_dns_put_name(m + 12, "_svc._tcp.test") + 4;
    o2 += put_rr(m + o2, 33, 0x80000000u, srv, sl);
    ck_assert_int_eq(tether__srv_min_ttl(m, o2), 0);
}
END_TEST

/* ---- dnsmasq ---------------------------------------------------------------- */

static struct th_dnsmasq dm;
static char dm_servers[64]; /* "127.0.0.1:PORT" */

/* Whether 127.0.0.1:port answers the SRV query for _probe._tcp.test with
 * at least one record. */
static bool dm_answers(int port)
{
    uint8_t r[1500];
    return th_dns_query(port, "_probe._tcp.test", 33 /* SRV */, r, sizeof r, 100) >= 12 &&
           (r[6] << 8 | r[7]) > 0;
}

static void dm_kill(void)
{
    th_dnsmasq_kill(&dm);
}

/* Picks the directory and the port dnsmasq will use (the loop needs the
 * port before the servers, whose ports the records need, exist). */
static void dm_prepare(void)
{
    th_dnsmasq_init(&dm, "tether-srv");
    dm.port = th_free_port();
    snprintf(dm_servers, sizeof dm_servers, "127.0.0.1:%d", dm.port);
}

/* (Re)starts dnsmasq on dm.port with records (plus _probe._tcp.test), and
 * waits until it answers. The previous one must be gone (dm_kill). */
static void dm_start(const char *records)
{
    char conf[4096];
    snprintf(conf, sizeof conf,
             "port=%d\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n"
             "local=/test/\nlog-facility=-\n"
             "host-record=a.test,127.0.0.1\nhost-record=b.test,127.0.0.1\n"
             "host-record=c.test,127.0.0.1\nsrv-host=_probe._tcp.test,a.test,1\n%s",
             dm.port, records);
    th_write_file(dm.conf, conf);
    /* A restart may find the port still held for a moment: retry. */
    for (int attempt = 0; attempt < 20; attempt++) {
        th_dnsmasq_spawn(&dm, true);
        if (th_dnsmasq_wait(&dm, dm_answers, 5000) == 1) {
            return;
        }
        dm_kill();
        usleep(100 * 1000);
    }
    ck_abort_msg("dnsmasq did not start answering on port %d (log in %s)", dm.port, dm.log);
}

static void loop_start(void)
{
    dm_prepare();
    tether_loop_opts lo;
    tether_loop_opts_init(&lo);
    lo.dns_servers = dm_servers;
    lo.dns_timeout_ms = 500;
    lo.dns_tries = 2;
    ck_assert_int_eq(tether_loop_new(&th_loop, &lo), TETHER_OK);
}

static void teardown_srv(void)
{
    if (th_loop != NULL) {
        th_teardown();
    }
    dm_kill();
    th_dnsmasq_remove(&dm);
}

/* ---- servers -------------------------------------------------------------- */

#define NSRV 3

static struct {
    tether_listener *l[NSRV];
    int port[NSRV];
    int accepted[NSRV];
    bool close_accepted; /* close every accepted connection at once */
} S;

static void s_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    int i = (int)(intptr_t)ud;
    S.accepted[i]++;
    if (S.close_accepted) {
        tether_conn_close(c);
    }
}

static void servers_start(tether_tls_config *tls)
{
    for (int i = 0; i < NSRV; i++) {
        tether_conn_opts o;
        tether_conn_opts_init(&o);
        o.tls = tls;
        tether_listen_opts lo;
        tether_listen_opts_init(&lo);
        lo.on_accept = s_accept;
        lo.userdata = (void *)(intptr_t)i;
        lo.conn_opts = &o;
        tether_error err;
        int rv = tether_listen(&S.l[i], th_loop,
                               tls != NULL ? "tls://127.0.0.1:0" : "tcp://127.0.0.1:0", &lo, &err);
        ck_assert_msg(rv == TETHER_OK, "listen: %s", err.message);
        const char *u = tether_listener_url(S.l[i]);
        S.port[i] = atoi(strrchr(u, ':') + 1);
    }
}

static void servers_stop(void)
{
    for (int i = 0; i < NSRV; i++) {
        if (S.l[i] != NULL) {
            tether_listener_close(S.l[i]);
            S.l[i] = NULL;
        }
    }
}

static int server_of_port(int port)
{
    for (int i = 0; i < NSRV; i++) {
        if (S.port[i] == port) {
            return i;
        }
    }
    return -1;
}

/* ---- dials ---------------------------------------------------------------- */

struct batch {
    int running;
    int ok;
    int failed;
    int by_server[NSRV];
    int last_status;
    char last_err[TETHER_ERROR_MSG_MAX];
};

static void b_connect(tether_conn *c, int status, void *ud)
{
    struct batch *b = ud;
    if (status == TETHER_OK) {
        char peer[64];
        ck_assert_int_eq(tether_conn_peer(c, peer, sizeof peer), TETHER_OK);
        int i = server_of_port(atoi(strrchr(peer, ':') + 1));
        ck_assert_msg(i >= 0, "connected to %s, which is none of the servers", peer);
        b->by_server[i]++;
        b->ok++;
        tether_conn_close(c);
    } else {
        b->failed++;
        b->last_status = status;
        snprintf(b->last_err, sizeof b->last_err, "%s", tether_conn_last_error(c));
    }
}

static void b_close(tether_conn *c, int reason, void *ud)
{
    (void)c;
    (void)reason;
    struct batch *b = ud;
    b->running--;
}

static bool batch_idle(void *arg)
{
    return ((struct batch *)arg)->running == 0;
}

/* Dials url n times, at most `parallel` at once, each with the given
 * connect timeout, and waits for all. */
static void dial_many_timeout(struct batch *b, const char *url, int n, int parallel,
                              tether_tls_config *tls, int connect_timeout_ms)
{
    memset(b, 0, sizeof *b);
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.on_connect = b_connect;
    o.on_close = b_close;
    o.userdata = b;
    o.connect_timeout_ms = connect_timeout_ms;
    o.tls = tls;
    for (int started = 0; started < n;) {
        while (b->running < parallel && started < n) {
            tether_conn *c;
            th_dial(&c, url, &o);
            b->running++;
            started++;
        }
        ck_assert_msg(th_run_until_pred(batch_idle, b, 30000), "dials of %s did not finish", url);
    }
}

/* Dials url n times, at most `parallel` at once, with a 10 s connect
 * timeout, and waits for all. */
static void dial_many(struct batch *b, const char *url, int n, int parallel, tether_tls_config *tls)
{
    dial_many_timeout(b, url, n, parallel, tls, 10000);
}

/* One dial, expected to fail: returns its status, the message in b. */
static int dial_fail(struct batch *b, const char *url)
{
    dial_many(b, url, 1, 1, NULL);
    ck_assert_int_eq(b->ok, 0);
    ck_assert_int_eq(b->failed, 1);
    return b->last_status;
}

/* ---- tests against dnsmasq ------------------------------------------------ */

/* Three servers: A and B share priority 1 with weights 70 and 30, C has
 * priority 2. 1 000 dials: C never while A and B are up, and A's share is
 * within 5 standard deviations of the binomial (n = 1000, p = 0.7, sigma
 * 14.5, so 73), plus 10 for RFC 2782's bias (the number 0 goes to the first
 * record in the sums: at most 1/101 of the dials). A failure by chance has
 * a probability below 1e-6. Then A and B stop listening: every dial falls
 * over to C. */
START_TEST(weights_and_priorities)
{
    loop_start();
    servers_start(NULL);
    char rec[512];
    snprintf(rec, sizeof rec,
             "local-ttl=60\n"
             "srv-host=_svc._tcp.test,a.test,%d,1,70\n"
             "srv-host=_svc._tcp.test,b.test,%d,1,30\n"
             "srv-host=_svc._tcp.test,c.test,%d,2,50\n",
             S.port[0], S.port[1], S.port[2]);
    dm_kill();
    dm_start(rec);

    struct batch b;
    dial_many(&b, "tcp+srv://_svc._tcp.test", 1000, 50, NULL);
    ck_assert_msg(b.failed == 0, "%d dials failed, the last: %s", b.failed, b.last_err);
    printf("weights_and_priorities: 1000 dials: A (70) %d, B (30) %d, C (priority 2) %d; "
           "%llu SRV queries\n",
           b.by_server[0], b.by_server[1], b.by_server[2],
           (unsigned long long)tether__srv_queries(th_loop));
    ck_assert_int_eq(b.by_server[2], 0);
    ck_assert_int_eq(b.by_server[0] + b.by_server[1], 1000);
    double sigma = sqrt(1000 * 0.7 * 0.3);
    int tol = (int)ceil(5 * sigma) + 10;
    ck_assert_msg(abs(b.by_server[0] - 700) <= tol, "A got %d of 1000, want 700 +- %d",
                  b.by_server[0], tol);
    /* The answer is cached for its TTL (60 s): at most the first 50
     * concurrent dials asked DNS. */
    ck_assert_uint_ge(tether__srv_queries(th_loop), 1);
    ck_assert_uint_le(tether__srv_queries(th_loop), 50);

    /* A and B go down: priority 2 takes over. */
    tether_listener_close(S.l[0]);
    tether_listener_close(S.l[1]);
    S.l[0] = S.l[1] = NULL;
    dial_many(&b, "tcp+srv://_svc._tcp.test", 20, 5, NULL);
    ck_assert_msg(b.failed == 0, "%d dials failed, the last: %s", b.failed, b.last_err);
    ck_assert_int_eq(b.by_server[2], 20);

    /* C too: every target is listed in the error. */
    tether_listener_close(S.l[2]);
    S.l[2] = NULL;
    ck_assert_int_eq(dial_fail(&b, "tcp+srv://_svc._tcp.test"), TETHER_ECONNREFUSED);
    ck_assert_msg(strstr(b.last_err, "all 3 SRV targets failed: ") != NULL, "%s", b.last_err);
    char want[64];
    for (int i = 0; i < NSRV; i++) {
        snprintf(want, sizeof want, "%c.test:%d refused", 'a' + i, S.port[i]);
        ck_assert_msg(strstr(b.last_err, want) != NULL, "'%s' lacks '%s'", b.last_err, want);
    }
    /* C, priority 2, is tried last. */
    ck_assert_ptr_nonnull(strstr(b.last_err, "; c.test:"));
}
END_TEST

/* Lookup failures name the name; a "." target says the service is not
 * available; a target without an address is skipped with its reason. */
START_TEST(srv_errors)
{
    loop_start();
    servers_start(NULL);
    char rec[512];
    snprintf(rec, sizeof rec,
             "local-ttl=0\n"
             "srv-host=_gone._tcp.test\n"
             "srv-host=_half._tcp.test,nowhere.test,%d,1,0\n"
             "srv-host=_half._tcp.test,b.test,%d,2,0\n"
             "txt-record=_txt._tcp.test,\"no SRV here\"\n",
             S.port[0], S.port[1]);
    dm_kill();
    dm_start(rec);

    struct batch b;
    ck_assert_int_eq(dial_fail(&b, "tcp+srv://_nope._tcp.test"), TETHER_ENOTFOUND);
    ck_assert_str_eq(b.last_err, "connect to tcp+srv://_nope._tcp.test failed: no SRV records for "
                                 "_nope._tcp.test (the name does not exist)");
    ck_assert_int_eq(dial_fail(&b, "tcp+srv://_txt._tcp.test"), TETHER_ENOTFOUND);
    ck_assert_str_eq(
        b.last_err,
        "connect to tcp+srv://_txt._tcp.test failed: no SRV records for _txt._tcp.test");
    ck_assert_int_eq(dial_fail(&b, "tcp+srv://_gone._tcp.test"), TETHER_ENOTFOUND);
    ck_assert_msg(strstr(b.last_err, "_gone._tcp.test: the service is not available (its SRV "
                                     "target is \".\", RFC 2782)") != NULL,
                  "%s", b.last_err);

    /* nowhere.test has no address: B, priority 2, serves. */
    dial_many(&b, "tcp+srv://_half._tcp.test", 5, 1, NULL);
    ck_assert_msg(b.failed == 0, "%s", b.last_err);
    ck_assert_int_eq(b.by_server[1], 5);
    tether_listener_close(S.l[1]);
    S.l[1] = NULL;
    ck_assert_int_eq(dial_fail(&b, "tcp+srv://_half._tcp.test"), TETHER_ECONNREFUSED);
    char want[200];
    snprintf(want, sizeof want,
             "all 2 SRV targets failed: nowhere.test:%d (host nowhere.test not found); "
             "b.test:%d refused",
             S.port[0], S.port[1]);
    ck_assert_msg(strstr(b.last_err, want) != NULL, "'%s' lacks '%s'", b.last_err, want);
    servers_stop();
}
END_TEST

/* The deadline covers the SRV lookup: a DNS server that never answers. */
START_TEST(srv_lookup_deadline)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    socklen_t sl = sizeof sin;
    getsockname(fd, (struct sockaddr *)&sin, &sl);
    snprintf(dm_servers, sizeof dm_servers, "127.0.0.1:%d", ntohs(sin.sin_port));
    tether_loop_opts lo;
    tether_loop_opts_init(&lo);
    lo.dns_servers = dm_servers;
    lo.dns_timeout_ms = 5000;
    ck_assert_int_eq(tether_loop_new(&th_loop, &lo), TETHER_OK);
    struct batch b;
    dial_many_timeout(&b, "tcp+srv://_slow._tcp.test", 1, 1, NULL, 300);
    ck_assert_int_eq(b.last_status, TETHER_EDNSTIMEDOUT);
    ck_assert_str_eq(b.last_err, "connect to tcp+srv://_slow._tcp.test failed: SRV lookup of "
                                 "_slow._tcp.test timed out after 300 ms (connect timeout)");
    close(fd);
}
END_TEST

/* One connect deadline covers every target, and each attempt's share of
 * it counts the targets still waiting: a first target that hangs is
 * abandoned after half of the 10 s deadline, leaving the rest for the
 * second; with 600 ms in all, the error says how far it got. */
START_TEST(deadline_covers_targets)
{
    loop_start();
    servers_start(NULL);
    int hang[5];
    int hp = th_hang_port(hang, 5);
    char rec[512];
    snprintf(rec, sizeof rec,
             "srv-host=_svc._tcp.test,a.test,%d,1,1\n"
             "srv-host=_svc._tcp.test,b.test,%d,2,1\n",
             hp, S.port[1]);
    dm_start(rec);

    struct batch b;
    dial_many(&b, "tcp+srv://_svc._tcp.test", 1, 1, NULL); /* 10 s deadline */
    ck_assert_msg(b.failed == 0, "%s", b.last_err);
    ck_assert_int_eq(b.by_server[1], 1);

    dial_many_timeout(&b, "tcp+srv://_svc._tcp.test", 1, 1, NULL, 600);
    ck_assert_int_eq(b.last_status, TETHER_ETIMEDOUT);
    char want[160];
    snprintf(want, sizeof want,
             "connect to tcp+srv://_svc._tcp.test failed: timed out after 600 ms (connect "
             "timeout); 1 of 2 SRV targets tried: a.test:%d timed out after ",
             hp);
    ck_assert_msg(strncmp(b.last_err, want, strlen(want)) == 0, "'%s' does not start with '%s'",
                  b.last_err, want);
    for (int i = 0; i < 5; i++) {
        close(hang[i]);
    }
    servers_stop();
}
END_TEST

/* tls+srv:// checks the certificate against the SRV target's name, not the
 * SRV name: the test certificate is for "localhost". */
START_TEST(tls_checks_the_target_name)
{
    loop_start();
    tether_tls_opts so;
    tether_tls_opts_init(&so);
    so.cert_file = TETHER_CERTS_DIR "/server.pem";
    so.key_file = TETHER_CERTS_DIR "/server.key";
    tether_tls_config *scfg;
    tether_error err;
    ck_assert_int_eq(tether_tls_config_new(&scfg, &so, &err), TETHER_OK);
    servers_start(scfg);
    tether_tls_config_unref(scfg);
    char rec[512];
    snprintf(rec, sizeof rec,
             "srv-host=_good._tcp.test,localhost,%d,1,1\n"
             "srv-host=_bad._tcp.test,a.test,%d,1,1\n",
             S.port[0], S.port[1]);
    dm_kill();
    dm_start(rec);

    tether_tls_opts co;
    tether_tls_opts_init(&co);
    co.ca_file = TETHER_CERTS_DIR "/ca.pem";
    tether_tls_config *ccfg;
    ck_assert_int_eq(tether_tls_config_new(&ccfg, &co, &err), TETHER_OK);
    struct batch b;
    dial_many(&b, "tls+srv://_good._tcp.test", 3, 3, ccfg);
    ck_assert_msg(b.failed == 0, "%s", b.last_err);
    ck_assert_int_eq(b.by_server[0], 3);
    /* a.test is not in the certificate. */
    dial_many(&b, "tls+srv://_bad._tcp.test", 1, 1, ccfg);
    ck_assert_int_eq(b.failed, 1);
    ck_assert_int_eq(b.last_status, TETHER_ECERT);
    ck_assert_msg(strstr(b.last_err, "a.test") != NULL, "%s", b.last_err);
    tether_tls_config_unref(ccfg);

    /* server_name overrides the target's name, as for tls://. */
    co.server_name = "localhost";
    ck_assert_int_eq(tether_tls_config_new(&ccfg, &co, &err), TETHER_OK);
    dial_many(&b, "tls+srv://_bad._tcp.test", 2, 2, ccfg);
    ck_assert_msg(b.failed == 0, "%s", b.last_err);
    ck_assert_int_eq(b.by_server[1], 2);
    tether_tls_config_unref(ccfg);
    servers_stop();
}
END_TEST

/* ---- a reconnecting client following DNS ------------------------------------ */

struct want {
    int server;
    int at_least;
};

static bool reached(void *arg)
{
    const struct want *w = arg;
    return S.accepted[w->server] >= w->at_least;
}

static void wait_accepts(int server, int more)
{
    struct want w = {server, S.accepted[server] + more};
    ck_assert_msg(th_run_until_pred(reached, &w, 30000),
                  "server %c got %d connections, wanted %d (A %d, B %d)", 'A' + server,
                  S.accepted[server], w.at_least, S.accepted[0], S.accepted[1]);
}

/* A tether_client whose connections the servers close at once, so it
 * reconnects over and over. DNS publishes A (TTL 1 s); B is added: B
 * receives new connections; A is removed while it keeps listening: once
 * the TTL has passed, A receives at most the one connection that was
 * already being dialled, while B receives 20 more. */
START_TEST(client_follows_dns)
{
    loop_start();
    servers_start(NULL);
    S.close_accepted = true;
    char only_a[128], both[512], only_b[128];
    snprintf(only_a, sizeof only_a, "local-ttl=1\nsrv-host=_svc._tcp.test,a.test,%d,1,10\n",
             S.port[0]);
    snprintf(both, sizeof both, "%ssrv-host=_svc._tcp.test,b.test,%d,1,10\n", only_a, S.port[1]);
    snprintf(only_b, sizeof only_b, "local-ttl=1\nsrv-host=_svc._tcp.test,b.test,%d,1,10\n",
             S.port[1]);
    dm_kill();
    dm_start(only_a);

    tether_client_opts co;
    tether_client_opts_init(&co);
    co.initial_backoff_ms = 20;
    co.max_backoff_ms = 50;
    co.reconnect_spread_ms = 0;
    tether_client *cl;
    tether_error err;
    ck_assert_int_eq(tether_client_new(&cl, th_loop, "tcp+srv://_svc._tcp.test", &co, &err),
                     TETHER_OK);
    wait_accepts(0, 5);
    ck_assert_int_eq(S.accepted[1], 0);

    dm_kill();
    dm_start(both);
    wait_accepts(1, 5);
    printf("client_follows_dns: with A and B published: A %d, B %d\n", S.accepted[0],
           S.accepted[1]);

    dm_kill();
    dm_start(only_b);
    /* Every answer cached before the restart expires within 1 s of it. */
    uint64_t expiry = th_now_ms() + 1000;
    while (th_now_ms() < expiry + 50) {
        tether_loop_run_once(th_loop, 10);
    }
    int a_then = S.accepted[0];
    wait_accepts(1, 20);
    printf("client_follows_dns: after A left DNS: A +%d, B +20\n", S.accepted[0] - a_then);
    ck_assert_int_le(S.accepted[0] - a_then, 1);
    ck_assert_ptr_nonnull(S.l[0]); /* A was up all along */

    tether_client_close(cl);
    servers_stop();
}
END_TEST

static void setup_plain(void)
{
    memset(&dm, 0, sizeof dm);
    memset(&S, 0, sizeof S);
    th_loop = NULL;
}

static Suite *dns_srv_suite(void)
{
    Suite *s = suite_create("dns_srv");
    TCase *tu = tcase_create("order");
    tcase_add_test(tu, order_priority_then_weight);
    tcase_add_test(tu, order_first_pick_follows_weights);
    tcase_add_test(tu, order_all_zero_weights_shuffled);
    tcase_add_test(tu, min_ttl_of_raw_answers);
    suite_add_tcase(s, tu);

    TCase *tc = tcase_create("dnsmasq");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup_plain, teardown_srv);
    tcase_add_test(tc, weights_and_priorities);
    tcase_add_test(tc, srv_errors);
    tcase_add_test(tc, srv_lookup_deadline);
    tcase_add_test(tc, deadline_covers_targets);
    tcase_add_test(tc, tls_checks_the_target_name);
    tcase_add_test(tc, client_follows_dns);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(dns_srv_suite());
}
