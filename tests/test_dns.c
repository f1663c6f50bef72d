/* SPDX-License-Identifier: MIT */
/* Name resolution, connect timeouts and Happy Eyeballs, against a real DNS
 * server (dnsmasq) that each test starts on a loopback port with a
 * configuration it writes. Hanging addresses are listeners whose accept
 * queue is full (SYNs to them are dropped); refused ones are ports nobody
 * listens on. Nothing leaves the host: every address is on loopback or in
 * a network namespace the test creates. */
#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dns.h"
#include "dns_helpers.h"
#include "helpers.h"
#include "url.h"

/* ---- dnsmasq -------------------------------------------------------------- */

static struct th_dnsmasq dm;
static char dm_hosts[128];  /* its addn-hosts file, re-read on SIGHUP */
static char dm_servers[64]; /* "127.0.0.1:PORT" */

/* ---- a minimal DNS client, independent of the library ----------------------- */

static size_t skip_name(const uint8_t *p, size_t n, size_t o)
{
    while (o < n) {
        if ((p[o] & 0xc0) == 0xc0) {
            return o + 2;
        }
        if (p[o] == 0) {
            return o + 1;
        }
        o += 1u + p[o];
    }
    return n;
}

/* Asks 127.0.0.1:port for the A records of name. Returns how many were put
 * in out, or -1 if no answer came within timeout_ms. */
static int raw_query_a(int port, const char *name, struct in_addr *out, int max, int timeout_ms)
{
    uint8_t r[1500];
    int rn = th_dns_query(port, name, 1 /* A */, r, sizeof r, timeout_ms);
    if (rn < 0) {
        return -1;
    }
    size_t n = (size_t)rn;
    int found = 0;
    int an = r[6] << 8 | r[7];
    size_t o = skip_name(r, n, 12) + 4;
    for (int i = 0; i < an && o + 10 <= n; i++) {
        o = skip_name(r, n, o);
        if (o + 10 > n) {
            break;
        }
        int type = r[o] << 8 | r[o + 1];
        size_t rdlen = (size_t)(r[o + 8] << 8 | r[o + 9]);
        o += 10;
        if (type == 1 && rdlen == 4 && o + 4 <= n && found < max) {
            memcpy(&out[found++], r + o, 4);
        }
        o += rdlen;
    }
    return found;
}

static const char DM_RECORDS[] =
    "listen-address=127.0.0.1\n"
    "bind-interfaces\n"
    "no-resolv\n"
    "no-hosts\n"
    "local=/test/\n" /* unknown names under .test: NXDOMAIN, never forwarded */
    "host-record=a-only.test,127.0.0.1\n"
    "host-record=aaaa-only.test,::1\n"
    "host-record=both.test,127.0.0.1,::1\n"
    "host-record=multi.test,127.0.0.1\n"
    "host-record=multi.test,127.0.0.2\n"
    "host-record=multi.test,127.0.0.3\n"
    "host-record=ex.test,127.0.0.2,::1\n"
    "host-record=dead2.test,127.0.0.2\n"
    "host-record=dead2.test,127.0.0.3\n"
    "host-record=mixed.test,127.0.0.2,::1\n"
    "host-record=mixed.test,127.0.0.3\n"
    "txt-record=txt-only.test,\"no addresses here\"\n"
    "address=/burst.test/127.0.0.1\n"
    "log-facility=-\n"; /* stderr (our log file), not syslog */

static bool dm_answers(int port)
{
    struct in_addr a;
    return raw_query_a(port, "a-only.test", &a, 1, 100) == 1;
}

static void dm_start(void)
{
    th_dnsmasq_init(&dm, "tether-dns");
    snprintf(dm_hosts, sizeof dm_hosts, "%s/hosts", dm.dir);
    th_write_file(dm_hosts, "127.0.0.1 moved.test\n");
    char log[4096];
    for (int attempt = 0; attempt < 10; attempt++) {
        dm.port = th_free_port();
        char conf[2048];
        snprintf(conf, sizeof conf, "port=%d\naddn-hosts=%s\n%s", dm.port, dm_hosts, DM_RECORDS);
        th_write_file(dm.conf, conf);
        th_dnsmasq_spawn(&dm, false);
        int up = th_dnsmasq_wait(&dm, dm_answers, 5000);
        if (up == 1) {
            snprintf(dm_servers, sizeof dm_servers, "127.0.0.1:%d", dm.port);
            return;
        }
        th_dnsmasq_read_log(&dm, log, sizeof log);
        if (up == 0 && strstr(log, "in use") != NULL) {
            continue; /* lost the race for the port: pick another */
        }
        th_dnsmasq_kill(&dm);
        ck_abort_msg("dnsmasq did not start answering within 5 s; its log:\n%s", log);
    }
    ck_abort_msg("dnsmasq could not find a free port in 10 tries");
}

static void dm_stop(void)
{
    th_dnsmasq_kill(&dm);
    unlink(dm_hosts);
    th_dnsmasq_remove(&dm);
}

/* A loop whose resolver asks our dnsmasq only. */
static void setup_dns(void)
{
    dm_start();
    tether_loop_opts lo;
    tether_loop_opts_init(&lo);
    lo.dns_servers = dm_servers;
    lo.dns_timeout_ms = 1000;
    lo.dns_tries = 2;
    th_loop = NULL;
    ck_assert_int_eq(tether_loop_new(&th_loop, &lo), TETHER_OK);
}

static void teardown_dns(void)
{
    th_teardown();
    dm_stop();
}

/* ---- sockets that refuse, hang or accept ------------------------------------ */

static int make_addr(struct sockaddr_storage *ss, const char *ip, int port)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        return sizeof *sin;
    }
    ck_assert_int_eq(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)port);
    return sizeof *sin6;
}

/* A listener that never accepts; port 0 picks one. Returns the fd, or -1
 * if the address is taken. */
static int raw_listen(const char *ip, int port, int backlog, int *out_port)
{
    struct sockaddr_storage ss;
    socklen_t sl = (socklen_t)make_addr(&ss, ip, port);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0) {
        close(fd);
        return -1;
    }
    ck_assert_int_eq(listen(fd, backlog), 0);
    if (out_port != NULL) {
        getsockname(fd, (struct sockaddr *)&ss, &sl);
        *out_port = ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                                            : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return fd;
}

/* An address whose SYNs are dropped: a listener with a full accept queue. */
struct hang {
    int lfd;
    int fill[4];
};

static bool hang_start(struct hang *h, const char *ip, int port)
{
    h->lfd = raw_listen(ip, port, 0, NULL);
    if (h->lfd < 0) {
        return false;
    }
    struct sockaddr_storage ss;
    socklen_t sl = (socklen_t)make_addr(&ss, ip, port);
    for (int i = 0; i < 4; i++) {
        h->fill[i] = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        connect(h->fill[i], (struct sockaddr *)&ss, sl);
    }
    usleep(100 * 1000);
    return true;
}

static void hang_stop(struct hang *h)
{
    for (int i = 0; i < 4; i++) {
        close(h->fill[i]);
    }
    close(h->lfd);
}

/* A port P with a never-accepting listener on good_ip:P and, for each of
 * hang_ips, a hanging address on the same port. */
struct scene {
    int port;
    int good;
    struct hang hangs[2];
    int nhang;
};

static void scene_start(struct scene *s, const char *good_ip, const char *const *hang_ips,
                        int nhang)
{
    for (int tries = 0; tries < 50; tries++) {
        memset(s, 0, sizeof *s);
        s->good = -1;
        if (good_ip != NULL) {
            s->good = raw_listen(good_ip, 0, 128, &s->port);
        } else {
            /* A port nobody listens on anywhere: reserve it with a bound
             * but not listening socket on 127.0.0.1. */
            s->good = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            struct sockaddr_storage ss;
            socklen_t sl = (socklen_t)make_addr(&ss, "127.0.0.1", 0);
            ck_assert_int_eq(bind(s->good, (struct sockaddr *)&ss, sl), 0);
            getsockname(s->good, (struct sockaddr *)&ss, &sl);
            s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        }
        bool ok = true;
        for (int i = 0; i < nhang && ok; i++) {
            ok = hang_start(&s->hangs[i], hang_ips[i], s->port);
            if (ok) {
                s->nhang++;
            }
        }
        if (ok) {
            return;
        }
        for (int i = 0; i < s->nhang; i++) {
            hang_stop(&s->hangs[i]);
        }
        close(s->good);
    }
    ck_abort_msg("no port free on every address needed");
}

static void scene_stop(struct scene *s)
{
    for (int i = 0; i < s->nhang; i++) {
        hang_stop(&s->hangs[i]);
    }
    close(s->good);
}

/* ---- dialling ------------------------------------------------------------- */

struct dial {
    bool done;
    bool closed;
    int status;
    uint64_t t0;
    uint64_t took;
    int fds_at_connect;
    char err[TETHER_ERROR_MSG_MAX];
    char peer[64];
};

static void d_on_connect(tether_conn *c, int status, void *ud)
{
    struct dial *r = ud;
    r->done = true;
    r->status = status;
    r->took = th_now_ms() - r->t0;
    r->fds_at_connect = th_count_fds();
    snprintf(r->err, sizeof r->err, "%s", tether_conn_last_error(c));
    if (status == TETHER_OK) {
        tether_conn_peer(c, r->peer, sizeof r->peer);
        tether_conn_abort(c); /* the peers here never accept: do not linger */
    }
}

static void d_on_close(tether_conn *c, int reason, void *ud)
{
    (void)c;
    (void)reason;
    struct dial *r = ud;
    r->closed = true;
}

static bool dial_closed(void *arg)
{
    return ((struct dial *)arg)->closed;
}

/* Dials url with o (NULL for defaults) and runs the loop until it is over. */
static void dial_run(struct dial *r, const char *url, const tether_conn_opts *o, int wait_ms)
{
    memset(r, 0, sizeof *r);
    tether_conn_opts opts;
    tether_conn_opts_init(&opts);
    if (o != NULL) {
        opts = *o;
    }
    opts.userdata = r;
    opts.on_connect = d_on_connect;
    opts.on_close = d_on_close;
    tether_conn *c = NULL;
    /* Deadlines count from the loop's cached time: refresh it, as dialling
     * from a loop callback would. */
    tether_loop_run_once(th_loop, 0);
    r->t0 = th_now_ms();
    th_dial(&c, url, &opts);
    ck_assert_msg(th_run_until_pred(dial_closed, r, wait_ms), "dial %s did not finish in %d ms",
                  url, wait_ms);
    ck_assert(r->done);
}

static const char *urlf(const char *host, int port)
{
    static char buf[300];
    snprintf(buf, sizeof buf, "tcp://%s:%d", host, port);
    return buf;
}

/* ---- resolver results --------------------------------------------------------- */

struct lookup {
    bool done;
    int status;
    size_t n;
    struct tether__addr addrs[8];
    char detail[200];
};

static void lookup_cb(int status, struct tether__addr *addrs, size_t n, const char *detail,
                      void *ud)
{
    struct lookup *l = ud;
    l->done = true;
    l->status = status;
    l->n = TETHER__MIN(n, TETHER__ARRAY_SIZE(l->addrs));
    if (addrs != NULL) {
        memcpy(l->addrs, addrs, l->n * sizeof *addrs);
    }
    snprintf(l->detail, sizeof l->detail, "%s", detail);
    free(addrs);
}

static bool lookup_done(void *arg)
{
    return ((struct lookup *)arg)->done;
}

static void lookup(struct lookup *l, const char *name, int family)
{
    memset(l, 0, sizeof *l);
    struct tether__dns_req *req;
    ck_assert_int_eq(tether__dns_resolve(&req, th_loop, name, 80, family, lookup_cb, l, NULL),
                     TETHER_OK);
    /* Never from inside the call, even for a hosts-file hit. */
    ck_assert(!l->done);
    ck_assert(th_run_until_pred(lookup_done, l, 5000));
}

static const char *fmt_addr(const struct tether__addr *a)
{
    static char buf[4][64];
    static int i;
    i = (i + 1) % 4;
    tether__addr_format((const struct sockaddr *)&a->ss, a->len, buf[i], sizeof buf[i]);
    return buf[i];
}

START_TEST(records)
{
    struct lookup l;

    lookup(&l, "a-only.test", AF_UNSPEC);
    ck_assert_int_eq(l.status, TETHER_OK);
    ck_assert_uint_eq(l.n, 1);
    ck_assert_str_eq(fmt_addr(&l.addrs[0]), "127.0.0.1:80");

    lookup(&l, "aaaa-only.test", AF_UNSPEC);
    ck_assert_int_eq(l.status, TETHER_OK);
    ck_assert_uint_eq(l.n, 1);
    ck_assert_str_eq(fmt_addr(&l.addrs[0]), "[::1]:80");

    /* Both families: IPv6 first (RFC 6724 prefers ::1 to 127.0.0.1). */
    lookup(&l, "both.test", AF_UNSPEC);
    ck_assert_int_eq(l.status, TETHER_OK);
    ck_assert_uint_eq(l.n, 2);
    ck_assert_str_eq(fmt_addr(&l.addrs[0]), "[::1]:80");
    ck_assert_str_eq(fmt_addr(&l.addrs[1]), "127.0.0.1:80");

    /* Several A records: all of them, each once. */
    lookup(&l, "multi.test", AF_UNSPEC);
    ck_assert_int_eq(l.status, TETHER_OK);
    ck_assert_uint_eq(l.n, 3);
    unsigned seen = 0;
    for (size_t i = 0; i < l.n; i++) {
        const char *a = fmt_addr(&l.addrs[i]);
        ck_assert_msg(strncmp(a, "127.0.0.", 8) == 0, "%s", a);
        seen |= 1u << (a[8] - '0');
    }
    ck_assert_uint_eq(seen, 0xeu); /* .1, .2 and .3 */

    /* Mixed: the single IPv6 address first, then the IPv4 ones. */
    lookup(&l, "mixed.test", AF_UNSPEC);
    ck_assert_int_eq(l.status, TETHER_OK);
    ck_assert_uint_eq(l.n, 3);
    ck_assert_str_eq(fmt_addr(&l.addrs[0]), "[::1]:80");
    ck_assert_int_eq(l.addrs[1].ss.ss_family, AF_INET);
    ck_assert_int_eq(l.addrs[2].ss.ss_family, AF_INET);

    lookup(&l, "nx.test", AF_UNSPEC);
    ck_assert_int_eq(l.status, TETHER_ENOTFOUND);
    ck_assert_str_eq(l.detail, "host nx.test not found");

    /* Families. */
    lookup(&l, "both.test", AF_INET);
    ck_assert_int_eq(l.status, TETHER_OK);
    ck_assert_uint_eq(l.n, 1);
    ck_assert_str_eq(fmt_addr(&l.addrs[0]), "127.0.0.1:80");
    lookup(&l, "aaaa-only.test", AF_INET);
    ck_assert_int_eq(l.status, TETHER_ENOADDR);
    ck_assert_str_eq(l.detail, "host aaaa-only.test has no IPv4 address");
    lookup(&l, "a-only.test", AF_INET6);
    ck_assert_int_eq(l.status, TETHER_ENOADDR);
    ck_assert_str_eq(l.detail, "host a-only.test has no IPv6 address");
    lookup(&l, "txt-only.test", AF_UNSPEC);
    ck_assert_int_eq(l.status, TETHER_ENOADDR);
    ck_assert_str_eq(l.detail, "host txt-only.test has no IPv4 or IPv6 address");
}
END_TEST

/* Cancelled requests never call back; their queries end in the background
 * and a loop freed with queries in flight frees them. */
START_TEST(cancel_lookup)
{
    struct lookup l;
    memset(&l, 0, sizeof l);
    struct tether__dns_req *req;
    /* Cancelled while c-ares still works on it: the answer is dropped
     * when it arrives. */
    ck_assert_int_eq(
        tether__dns_resolve(&req, th_loop, "a-only.test", 80, AF_UNSPEC, lookup_cb, &l, NULL),
        TETHER_OK);
    ck_assert_uint_eq(tether__dns_inflight(th_loop), 1);
    tether__dns_cancel(req);
    ck_assert_uint_eq(tether__dns_inflight(th_loop), 1);
    for (int i = 0; i < 200 && tether__dns_inflight(th_loop) > 0; i++) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_uint_eq(tether__dns_inflight(th_loop), 0);
    /* Answered from /etc/hosts inside the call, so the delivery is already
     * queued: cancelling removes it. */
    ck_assert_int_eq(
        tether__dns_resolve(&req, th_loop, "localhost", 80, AF_INET, lookup_cb, &l, NULL),
        TETHER_OK);
    tether__dns_cancel(req);
    ck_assert_uint_eq(tether__dns_inflight(th_loop), 0);
    th_run_idle(200);
    ck_assert(!l.done);
    /* One more left in flight for tether_loop_free(). */
    ck_assert_int_eq(
        tether__dns_resolve(&req, th_loop, "multi.test", 80, AF_UNSPEC, lookup_cb, &l, NULL),
        TETHER_OK);
    tether__dns_cancel(req);
}
END_TEST

/* ---- dialling names --------------------------------------------------------- */

START_TEST(dial_names)
{
    struct scene s;
    scene_start(&s, "127.0.0.1", NULL, 0);
    struct dial r;
    dial_run(&r, urlf("a-only.test", s.port), NULL, 5000);
    ck_assert_msg(r.status == TETHER_OK, "%s", r.err);
    ck_assert_str_eq(r.peer, urlf("127.0.0.1", s.port) + 6);
    scene_stop(&s);

    scene_start(&s, "::1", NULL, 0);
    dial_run(&r, urlf("aaaa-only.test", s.port), NULL, 5000);
    ck_assert_msg(r.status == TETHER_OK, "%s", r.err);
    char want[64];
    snprintf(want, sizeof want, "[::1]:%d", s.port);
    ck_assert_str_eq(r.peer, want);
    scene_stop(&s);
}
END_TEST

START_TEST(dial_errors)
{
    struct dial r;
    char want[256];

    dial_run(&r, "tcp://nx.test:5432", NULL, 5000);
    ck_assert_int_eq(r.status, TETHER_ENOTFOUND);
    ck_assert_str_eq(r.err, "connect to tcp://nx.test:5432 failed: host nx.test not found");

    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.family = TETHER_FAMILY_V4;
    dial_run(&r, "tcp://aaaa-only.test:5432", &o, 5000);
    ck_assert_int_eq(r.status, TETHER_ENOADDR);
    ck_assert_str_eq(r.err, "connect to tcp://aaaa-only.test:5432 failed: host aaaa-only.test "
                            "has no IPv4 address");
    dial_run(&r, "tcp://[::1]:5432", &o, 5000);
    ck_assert_int_eq(r.status, TETHER_ENOADDR);
    ck_assert_str_eq(r.err, "connect to tcp://[::1]:5432 failed: ::1 is not an IPv4 address");

    o.family = TETHER_FAMILY_V6;
    dial_run(&r, "tcp://txt-only.test:5432", &o, 5000);
    ck_assert_int_eq(r.status, TETHER_ENOADDR);

    /* Every address refused: all of them are listed, IPv6 first. */
    struct scene s;
    scene_start(&s, NULL, NULL, 0);
    dial_run(&r, urlf("mixed.test", s.port), NULL, 5000);
    ck_assert_int_eq(r.status, TETHER_ECONNREFUSED);
    snprintf(want, sizeof want,
             "connect to tcp://mixed.test:%d failed: 3 addresses tried: [::1]:%d refused; 127.0.0.",
             s.port, s.port);
    ck_assert_msg(strncmp(r.err, want, strlen(want)) == 0, "%s", r.err);
    /* Refusals come back at once: nothing waited for the attempt delay. */
    ck_assert_uint_lt(r.took, 240);

    /* Family V4 on a name with both: only the IPv4 address is tried. */
    o.family = TETHER_FAMILY_V4;
    dial_run(&r, urlf("both.test", s.port), &o, 5000);
    ck_assert_int_eq(r.status, TETHER_ECONNREFUSED);
    snprintf(want, sizeof want,
             "connect to tcp://both.test:%d failed: 1 address tried: 127.0.0.1:%d refused", s.port,
             s.port);
    ck_assert_str_eq(r.err, want);

    o.family = (tether_family)5;
    tether_conn *c;
    tether_error err;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, "tcp://a-only.test:1", &o, &err), TETHER_EINVAL);
    scene_stop(&s);
}
END_TEST

/* ---- Happy Eyeballs ------------------------------------------------------------- */

/* both.test is [::1] (hangs) then 127.0.0.1 (accepts): connected after
 * about one attempt delay, not after the connect timeout, and the hanging
 * attempt is closed by the time on_connect runs. */
START_TEST(he_hanging_first)
{
    const char *hang[] = {"::1"};
    struct scene s;
    scene_start(&s, "127.0.0.1", hang, 1);
    /* Warm up the resolver so that the fd count below is steady. */
    struct lookup l;
    lookup(&l, "both.test", AF_UNSPEC);
    th_run_idle(100);

    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.attempt_delay_ms = 300;
    o.connect_timeout_ms = 10000;
    int before = th_count_fds();
    struct dial r;
    dial_run(&r, urlf("both.test", s.port), &o, 10000);
    ck_assert_msg(r.status == TETHER_OK, "%s", r.err);
    ck_assert_str_eq(r.peer, urlf("127.0.0.1", s.port) + 6);
    ck_assert_msg(r.took >= 290 && r.took < 2000, "connected after %llu ms",
                  (unsigned long long)r.took);
    /* Only the winner is open: the [::1] attempt is closed. */
    ck_assert_int_eq(r.fds_at_connect, before + 1);
    th_run_idle(500);
    ck_assert_int_eq(th_count_fds(), before);
    printf("he_hanging_first: connected in %llu ms with a 300 ms attempt delay\n",
           (unsigned long long)r.took);
    scene_stop(&s);
}
END_TEST

/* A refused attempt starts the next one at once: with a 2 s attempt delay,
 * [::1] refused then 127.0.0.1 accepted comes back far sooner. */
START_TEST(he_refused_falls_back_at_once)
{
    struct scene s;
    scene_start(&s, "127.0.0.1", NULL, 0);
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.attempt_delay_ms = 2000;
    struct dial r;
    dial_run(&r, urlf("both.test", s.port), &o, 5000);
    ck_assert_msg(r.status == TETHER_OK, "%s", r.err);
    ck_assert_str_eq(r.peer, urlf("127.0.0.1", s.port) + 6);
    ck_assert_msg(r.took < 1000, "took %llu ms", (unsigned long long)r.took);
    scene_stop(&s);
}
END_TEST

/* First success wins even when earlier attempts are still running, and
 * the losers are closed: multi.test has three IPv4 addresses, in an order
 * the server chooses (it may change between queries); 127.0.0.1 accepts,
 * the other two hang. Whatever its position, the dial succeeds within a
 * couple of attempt delays, with only the winner's socket left open. */
START_TEST(he_first_success_wins)
{
    const char *hang[] = {"127.0.0.2", "127.0.0.3"};
    struct scene s;
    scene_start(&s, "127.0.0.1", hang, 2);
    struct lookup l;
    lookup(&l, "multi.test", AF_UNSPEC);
    th_run_idle(100);
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.attempt_delay_ms = 200;
    for (int round = 0; round < 3; round++) {
        int before = th_count_fds();
        struct dial r;
        dial_run(&r, urlf("multi.test", s.port), &o, 10000);
        ck_assert_msg(r.status == TETHER_OK, "%s", r.err);
        ck_assert_str_eq(r.peer, urlf("127.0.0.1", s.port) + 6);
        ck_assert_msg(r.took < 1500, "took %llu ms", (unsigned long long)r.took);
        ck_assert_int_eq(r.fds_at_connect, before + 1);
        th_run_idle(100);
        ck_assert_int_eq(th_count_fds(), before);
    }
    scene_stop(&s);
}
END_TEST

/* The example: one address refused, one that hangs until the
 * overall deadline. */
START_TEST(deadline_lists_attempts)
{
    const char *hang[] = {"127.0.0.2"};
    struct scene s;
    scene_start(&s, NULL, hang, 1);
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.connect_timeout_ms = 1000;
    int before = th_count_fds();
    struct dial r;
    dial_run(&r, urlf("ex.test", s.port), &o, 5000);
    ck_assert_int_eq(r.status, TETHER_ETIMEDOUT);
    char want[200];
    snprintf(want, sizeof want,
             "connect to tcp://ex.test:%d failed: 2 addresses tried: [::1]:%d refused; "
             "127.0.0.2:%d timed out after ",
             s.port, s.port, s.port);
    ck_assert_msg(strncmp(r.err, want, strlen(want)) == 0, "%s", r.err);
    int ms = atoi(r.err + strlen(want));
    /* The deadline minus the time the lookup took. */
    ck_assert_msg(ms > 850 && ms <= 1000, "%s", r.err);
    ck_assert_msg(r.took >= 990 && r.took < 2000, "took %llu ms", (unsigned long long)r.took);
    th_run_idle(200);
    ck_assert_int_eq(th_count_fds(), before);
    scene_stop(&s);
}
END_TEST

/* Two dead addresses and a 3 s budget, through the blocking API (which
 * must take the DNS servers from loop_opts): the first attempt is
 * abandoned at the 2 s floor (its share, 1.5 s, is below it), the second
 * runs until the deadline. */
START_TEST(per_attempt_limit_sync)
{
    const char *hang[] = {"127.0.0.2", "127.0.0.3"};
    struct scene s;
    scene_start(&s, NULL, hang, 2);
    tether_loop_opts lo;
    tether_loop_opts_init(&lo);
    lo.dns_servers = dm_servers;
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.loop_opts = &lo;
    int before = th_count_fds();
    tether_sync *sc = NULL;
    tether_error err;
    uint64_t t0 = th_now_ms();
    int rv = tether_sync_connect(&sc, urlf("dead2.test", s.port), &o, 3000, &err);
    uint64_t took = th_now_ms() - t0;
    ck_assert_int_eq(rv, TETHER_ETIMEDOUT);
    ck_assert_ptr_null(sc);
    ck_assert_msg(strstr(err.message, "failed: 2 addresses tried: 127.0.0.") != NULL, "%s",
                  err.message);
    ck_assert_msg(strstr(err.message, " timed out after 2000 ms; 127.0.0.") != NULL, "%s",
                  err.message);
    ck_assert_msg(took >= 2900 && took < 4500, "took %llu ms", (unsigned long long)took);
    ck_assert_int_eq(th_count_fds(), before);
    printf("per_attempt_limit_sync: %s\n", err.message);

    /* And a success through the blocking API. */
    scene_stop(&s);
    scene_start(&s, "127.0.0.1", NULL, 0);
    rv = tether_sync_connect(&sc, urlf("a-only.test", s.port), &o, 3000, &err);
    ck_assert_msg(rv == TETHER_OK, "%s", err.message);
    scene_stop(&s); /* resets the connection: closing does not linger */
    tether_sync_close(sc);

    /* Invalid DNS settings are refused before anything happens. */
    lo.dns_servers = "not-an-ip";
    rv = tether_sync_connect(&sc, "tcp://a-only.test:1", &o, 1000, &err);
    ck_assert_int_eq(rv, TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "dns_servers"));
}
END_TEST

/* ---- a moved service ---------------------------------------------------------- */

START_TEST(moved_service)
{
    struct scene a, b;
    scene_start(&a, "127.0.0.1", NULL, 0);
    /* The same port on 127.0.0.2. */
    b.port = a.port;
    b.nhang = 0;
    b.good = raw_listen("127.0.0.2", a.port, 128, NULL);
    ck_assert_int_ge(b.good, 0);

    struct dial r;
    dial_run(&r, urlf("moved.test", a.port), NULL, 5000);
    ck_assert_msg(r.status == TETHER_OK, "%s", r.err);
    ck_assert_str_eq(r.peer, urlf("127.0.0.1", a.port) + 6);

    /* Move it, and wait (bounded) until dnsmasq has re-read its hosts. */
    th_write_file(dm_hosts, "127.0.0.2 moved.test\n");
    ck_assert_int_eq(kill(dm.pid, SIGHUP), 0);
    bool moved = false;
    for (int i = 0; i < 100 && !moved; i++) {
        struct in_addr ip;
        moved = raw_query_a(dm.port, "moved.test", &ip, 1, 100) == 1 &&
                ip.s_addr == inet_addr("127.0.0.2");
        if (!moved) {
            usleep(20 * 1000);
        }
    }
    ck_assert_msg(moved, "dnsmasq did not pick up the new hosts file");

    dial_run(&r, urlf("moved.test", a.port), NULL, 5000);
    ck_assert_msg(r.status == TETHER_OK, "%s", r.err);
    ck_assert_str_eq(r.peer, urlf("127.0.0.2", a.port) + 6);
    scene_stop(&a);
    close(b.good);
}
END_TEST

/* ---- 10 000 lookups in flight ---------------------------------------------------- */

#define BURST 10000

struct burst {
    size_t total;
    size_t done;
    size_t ok;
    size_t timeouts;
    size_t peak;
    int first_err;
    char first_detail[200];
    uint64_t submit_ms;
    uint64_t took_ms;
    uint64_t last_tick;
    uint64_t worst;
    uint64_t ticks;
};

static void burst_cb(int status, struct tether__addr *addrs, size_t n, const char *detail, void *ud)
{
    (void)n;
    struct burst *b = ud;
    b->done++;
    if (status == TETHER_OK) {
        b->ok++;
    } else if (status == TETHER_EDNSTIMEDOUT) {
        b->timeouts++;
    } else if (b->first_err == 0) {
        b->first_err = status;
        snprintf(b->first_detail, sizeof b->first_detail, "%s", detail);
    }
    free(addrs);
}

static void burst_tick(tether_timer *t, void *ud)
{
    (void)t;
    struct burst *b = ud;
    uint64_t now = th_now_ms();
    if (now - b->last_tick > 5) {
        uint64_t late = now - b->last_tick - 5;
        b->worst = TETHER__MAX(b->worst, late);
    }
    b->last_tick = now;
    b->ticks++;
}

static bool burst_done(void *arg)
{
    const struct burst *b = arg;
    return b->done == b->total;
}

/* Fires n lookups at once (from one callback, as an application dialling
 * many names would) and runs the loop until every one has reported, while a
 * 5 ms timer measures how late the loop runs its callbacks. */
static void burst_run(struct burst *b, int n, int family, int wait_ms)
{
    memset(b, 0, sizeof *b);
    b->total = (size_t)n;
    tether_timer *t;
    ck_assert_int_eq(tether_timer_new(&t, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_timer_start(t, 5, 5, burst_tick, b), TETHER_OK);
    for (int i = 0; i < 10; i++) {
        tether_loop_run_once(th_loop, 10);
    }
    uint64_t t0 = th_now_ms();
    for (int i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "n%d.burst.test", i);
        struct tether__dns_req *req;
        int rv = tether__dns_resolve(&req, th_loop, name, 80, family, burst_cb, b, NULL);
        if (rv != TETHER_OK) {
            ck_abort_msg("lookup %d: %s", i, tether_err_name(rv));
        }
    }
    b->submit_ms = th_now_ms() - t0;
    b->peak = tether__dns_inflight(th_loop);
    /* The submission itself runs inside one callback: measure from here. A
     * tick that was due during it fires at once, on time from here on. */
    b->last_tick = th_now_ms();
    b->worst = 0;
    b->ticks = 0;
    ck_assert_msg(th_run_until_pred(burst_done, b, wait_ms), "%zu of %d lookups still pending",
                  b->total - b->done, n);
    uint64_t end = th_now_ms();
    /* The loop may have been busy right up to the end without a tick. */
    if (end - b->last_tick > 5) {
        b->worst = TETHER__MAX(b->worst, end - b->last_tick - 5);
    }
    b->took_ms = end - t0;
    tether_timer_free(t);
    ck_assert_uint_eq(b->done, b->total);
}

/* 10 000 lookups in flight at once, over UDP. dnsmasq answers at memory
 * speed while c-ares is still sending, so where the socket buffers are
 * small (net.core.rmem_max) some datagrams are dropped and c-ares
 * retransmits them; a lookup whose every try was dropped reports
 * TETHER_EDNSTIMEDOUT. Either way each lookup reports exactly once and the
 * loop keeps serving: that is what this test asserts. */
START_TEST(burst_10k)
{
    ck_assert_int_eq(tether_loop_free(th_loop), TETHER_OK);
    tether_loop_opts lo;
    tether_loop_opts_init(&lo);
    lo.dns_servers = dm_servers;
    lo.dns_timeout_ms = 250;
    lo.dns_tries = 5; /* 250 + 500 + 1000 + 2000 + 4000 ms at most */
    ck_assert_int_eq(tether_loop_new(&th_loop, &lo), TETHER_OK);
    struct burst b;
    burst_run(&b, BURST, AF_INET, 60000);
    printf("burst_10k: %d lookups (%zu in flight at once) submitted in %llu ms, all reported "
           "in %llu ms, %zu ok, %zu DNS timeouts; worst timer callback delay %llu ms "
           "(%llu ticks of 5 ms)\n",
           BURST, b.peak, (unsigned long long)b.submit_ms, (unsigned long long)b.took_ms, b.ok,
           b.timeouts, (unsigned long long)b.worst, (unsigned long long)b.ticks);
    fflush(stdout);
    ck_assert_uint_eq(b.peak, BURST);
    ck_assert_msg(b.ok + b.timeouts == BURST, "unexpected failure: %s (%s)",
                  tether_err_name(b.first_err), b.first_detail);
    ck_assert_uint_gt(b.ok, 0);
    ck_assert_msg(b.worst < 1000, "worst callback delay %llu ms", (unsigned long long)b.worst);
}
END_TEST

/* Over TCP (c-ares' ARES_FLAG_USEVC): connecting and queued queries need
 * write interest, which goes through the same loop watchers. Kept small:
 * dnsmasq closes a TCP connection after 100 queries, which c-ares 1.18
 * reports as "Could not contact DNS servers" for the rest, and c-ares 1.18
 * writes every queued query with one writev(), which fails beyond IOV_MAX
 * (1024) queries. */
START_TEST(tcp_queries)
{
    ck_assert_int_eq(tether_loop_free(th_loop), TETHER_OK);
    tether__dns_test_flags = ARES_FLAG_USEVC;
    tether_loop_opts lo;
    tether_loop_opts_init(&lo);
    lo.dns_servers = dm_servers;
    ck_assert_int_eq(tether_loop_new(&th_loop, &lo), TETHER_OK);
    struct burst b;
    burst_run(&b, 45, AF_UNSPEC, 20000); /* 90 queries: A and AAAA */
    tether__dns_test_flags = 0;
    ck_assert_msg(b.ok == 45, "%zu failed, first: %s (%s)", 45 - b.ok, tether_err_name(b.first_err),
                  b.first_detail);
    struct lookup l;
    lookup(&l, "both.test", AF_UNSPEC);
    ck_assert_int_eq(l.status, TETHER_OK);
    ck_assert_uint_eq(l.n, 2);
}
END_TEST

/* ---- without a DNS server --------------------------------------------------------- */

/* A UDP socket that never answers, standing in for a dead DNS server. */
static int dead_dns(char *servers, size_t len)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_storage ss;
    socklen_t sl = (socklen_t)make_addr(&ss, "127.0.0.1", 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&ss, sl), 0);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    snprintf(servers, len, "127.0.0.1:%d", ntohs(((struct sockaddr_in *)&ss)->sin_port));
    return fd;
}

static void setup_dead(int timeout_ms, int tries, int *fd)
{
    char servers[64];
    *fd = dead_dns(servers, sizeof servers);
    tether_loop_opts lo;
    tether_loop_opts_init(&lo);
    lo.dns_servers = servers;
    lo.dns_timeout_ms = timeout_ms;
    lo.dns_tries = tries;
    th_loop = NULL;
    ck_assert_int_eq(tether_loop_new(&th_loop, &lo), TETHER_OK);
}

START_TEST(dns_timeout)
{
    int fd;
    setup_dead(200, 2, &fd);
    struct dial r;
    dial_run(&r, "tcp://db.test:5432", NULL, 10000);
    ck_assert_int_eq(r.status, TETHER_EDNSTIMEDOUT);
    ck_assert_msg(strstr(r.err, "connect to tcp://db.test:5432 failed: DNS lookup of db.test "
                                "timed out after ") == r.err,
                  "%s", r.err);
    /* 200 ms, then 400 ms: c-ares doubles the timeout for the second try. */
    ck_assert_msg(r.took >= 500 && r.took < 3000, "took %llu ms", (unsigned long long)r.took);

    /* The connect deadline also ends a lookup; it is a DNS timeout. */
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.connect_timeout_ms = 150;
    dial_run(&r, "tcp://db.test:5432", &o, 10000);
    ck_assert_int_eq(r.status, TETHER_EDNSTIMEDOUT);
    ck_assert_str_eq(r.err, "connect to tcp://db.test:5432 failed: resolving db.test timed out "
                            "after 150 ms (connect timeout)");
    ck_assert_msg(r.took >= 140 && r.took < 1000, "took %llu ms", (unsigned long long)r.took);
    th_teardown(); /* with that lookup still in flight */
    close(fd);
}
END_TEST

START_TEST(localhost_without_dns)
{
    int fd;
    setup_dead(100, 1, &fd);
    struct scene s;
    scene_start(&s, "127.0.0.1", NULL, 0);
    const char *hosts[] = {"localhost", "LocalHost.", "db.localhost", "127.0.0.1"};
    for (size_t i = 0; i < TETHER__ARRAY_SIZE(hosts); i++) {
        struct dial r;
        dial_run(&r, urlf(hosts[i], s.port), NULL, 5000);
        ck_assert_msg(r.status == TETHER_OK, "%s: %s", hosts[i], r.err);
        ck_assert_msg(r.took < 1000, "%s took %llu ms", hosts[i], (unsigned long long)r.took);
    }
    /* The resolver was never even created. */
    ck_assert(!tether__dns_exists(th_loop));
    scene_stop(&s);

    /* Nothing listening: both loopback addresses are listed. */
    scene_start(&s, NULL, NULL, 0);
    struct dial r;
    dial_run(&r, urlf("localhost", s.port), NULL, 5000);
    ck_assert_int_eq(r.status, TETHER_ECONNREFUSED);
    char want[200];
    snprintf(want, sizeof want,
             "connect to tcp://localhost:%d failed: 2 addresses tried: [::1]:%d refused; "
             "127.0.0.1:%d refused",
             s.port, s.port, s.port);
    ck_assert_str_eq(r.err, want);
    scene_stop(&s);
    th_teardown();
    close(fd);
}
END_TEST

START_TEST(servers_option)
{
    const char *good[] = {"127.0.0.1",
                          "127.0.0.1:5353",
                          "[::1]:53",
                          "::1",
                          "[::1]",
                          "127.0.0.1:5353, [::1]:53",
                          "10.0.0.1,10.0.0.2:54"};
    const char *bad[] = {"",     "bogus",  "127.0.0.1:",     "127.0.0.1:0", "127.0.0.1:65536",
                         "[::1", "[::1]x", "127.0.0.1,,::1", "1.2.3.4:5x",  "[127.0.0.1]:53"};
    for (size_t i = 0; i < TETHER__ARRAY_SIZE(good); i++) {
        tether_loop_opts lo;
        tether_loop_opts_init(&lo);
        lo.dns_servers = good[i];
        tether_loop *l = NULL;
        ck_assert_msg(tether_loop_new(&l, &lo) == TETHER_OK, "'%s' refused", good[i]);
        tether_loop_free(l);
    }
    for (size_t i = 0; i < TETHER__ARRAY_SIZE(bad); i++) {
        tether_loop_opts lo;
        tether_loop_opts_init(&lo);
        lo.dns_servers = bad[i];
        tether_loop *l = NULL;
        ck_assert_msg(tether_loop_new(&l, &lo) == TETHER_EINVAL, "'%s' accepted", bad[i]);
        ck_assert_ptr_null(l);
    }
}
END_TEST

static struct tether__addr A(const char *ip) {
    struct tether__addr a;
    a.len = (socklen_t)make_addr(&a.ss, ip, 1);
    return a;
}

START_TEST(interleave)
{
    struct tether__addr v[8] = {A("::1"),      A("::2"), A("::3"),      A("10.0.0.1"),
                                A("10.0.0.2"), A("::2"), A("10.0.0.1"), A("10.0.0.3")};
    size_t n = tether__addrs_order(v, 8);
    ck_assert_uint_eq(n, 6);
    const char *want[] = {"[::1]:1",    "10.0.0.1:1", "[::2]:1",
                          "10.0.0.2:1", "[::3]:1",    "10.0.0.3:1"};
    for (size_t i = 0; i < n; i++) {
        ck_assert_str_eq(fmt_addr(&v[i]), want[i]);
    }
    /* Starts with the family of the first address; leftovers keep order. */
    struct tether__addr w[5] = {A("10.0.0.1"), A("10.0.0.2"), A("10.0.0.3"), A("10.0.0.4"),
                                A("::1")};
    n = tether__addrs_order(w, 5);
    ck_assert_uint_eq(n, 5);
    const char *want2[] = {"10.0.0.1:1", "[::1]:1", "10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1"};
    for (size_t i = 0; i < n; i++) {
        ck_assert_str_eq(fmt_addr(&w[i]), want2[i]);
    }
    struct tether__addr one[1] = {A("::1")};
    ck_assert_uint_eq(tether__addrs_order(one, 1), 1);
    ck_assert_uint_eq(tether__addrs_order(one, 0), 0);
}
END_TEST

/* Network unreachable needs an address with no route. Inside a network
 * namespace of our own only a down loopback exists, so nothing can leave
 * the host. Runs in a child process (the namespace is per process). */
START_TEST(network_unreachable)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (unshare(CLONE_NEWNET) != 0) {
            fprintf(stderr, "network_unreachable: SKIP: cannot create a network namespace: %s\n",
                    strerror(errno));
            _exit(77);
        }
        tether_loop *loop;
        if (tether_loop_new(&loop, NULL) != TETHER_OK) {
            _exit(2);
        }
        tether_loop *saved = th_loop;
        th_loop = loop;
        struct dial r;
        int code = 0;
        dial_run(&r, "tcp://10.255.255.1:80", NULL, 5000);
        if (r.status != TETHER_ENETUNREACH ||
            strcmp(r.err, "connect to tcp://10.255.255.1:80: network unreachable") != 0) {
            fprintf(stderr, "numeric: %s: %s\n", tether_err_name(r.status), r.err);
            code = 3;
        }
        dial_run(&r, "tcp://localhost:80", NULL, 5000);
        /* With the loopback down, ::1 is not even assigned. */
        if (r.status != TETHER_ENETUNREACH ||
            strstr(r.err, "connect to tcp://localhost:80 failed: 2 addresses tried: [::1]:80 ") !=
                r.err ||
            strstr(r.err, "; 127.0.0.1:80 network unreachable") == NULL) {
            fprintf(stderr, "localhost: %s: %s\n", tether_err_name(r.status), r.err);
            code = 4;
        }
        th_run_idle(1000);
        if (tether_loop_free(loop) != TETHER_OK) {
            code = 5;
        }
        th_loop = saved;
        _exit(code);
    }
    int st = 0;
    uint64_t deadline = th_now_ms() + 20000;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (th_now_ms() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            ck_abort_msg("the namespace child hung");
        }
        usleep(10 * 1000);
    }
    ck_assert(WIFEXITED(st));
    if (WEXITSTATUS(st) == 77) {
        printf("network_unreachable: SKIPPED (network namespaces not permitted here)\n");
        return;
    }
    ck_assert_msg(WEXITSTATUS(st) == 0, "namespace child failed with %d", WEXITSTATUS(st));
}
END_TEST

/* Aborting a dial while it resolves, or while attempts run, cancels
 * everything: no callback but on_close, no descriptor left. */
static void abort_on_connect(tether_conn *c, int status, void *ud)
{
    (void)c;
    struct dial *r = ud;
    r->done = true;
    r->status = status;
}

START_TEST(abort_while_dialling)
{
    const char *hang[] = {"::1"};
    struct scene s;
    scene_start(&s, NULL, hang, 1);
    struct lookup l;
    lookup(&l, "ex.test", AF_UNSPEC);
    th_run_idle(100);
    int before = th_count_fds();
    for (int phase = 0; phase < 2; phase++) {
        struct dial r;
        memset(&r, 0, sizeof r);
        tether_conn_opts o;
        tether_conn_opts_init(&o);
        o.userdata = &r;
        o.on_connect = abort_on_connect;
        o.on_close = d_on_close;
        tether_conn *c;
        ck_assert_int_eq(tether_conn_dial(&c, th_loop, urlf("ex.test", s.port), &o, NULL),
                         TETHER_OK);
        if (phase == 1) {
            /* Let it resolve and start attempts ([::1] hangs, 127.0.0.2
             * refuses... or hangs: nothing listens there on this port). */
            for (int i = 0; i < 30; i++) {
                tether_loop_run_once(th_loop, 10);
            }
        }
        tether_conn_abort(c);
        ck_assert(th_run_until_pred(dial_closed, &r, 2000));
        ck_assert_int_eq(r.status, TETHER_ECANCELED);
    }
    th_run_idle(500);
    ck_assert_int_eq(th_count_fds(), before);
    scene_stop(&s);
}
END_TEST

static void setup_plain(void)
{
    th_loop = NULL;
}

static void teardown_plain(void)
{
    if (th_loop != NULL) {
        th_teardown();
    }
}

static Suite *dns_suite(void)
{
    Suite *s = suite_create("dns");

    TCase *tc = tcase_create("dnsmasq");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup_dns, teardown_dns);
    tcase_add_test(tc, records);
    tcase_add_test(tc, cancel_lookup);
    tcase_add_test(tc, dial_names);
    tcase_add_test(tc, dial_errors);
    tcase_add_test(tc, he_hanging_first);
    tcase_add_test(tc, he_refused_falls_back_at_once);
    tcase_add_test(tc, he_first_success_wins);
    tcase_add_test(tc, deadline_lists_attempts);
    tcase_add_test(tc, per_attempt_limit_sync);
    tcase_add_test(tc, moved_service);
    tcase_add_test(tc, abort_while_dialling);
    suite_add_tcase(s, tc);

    TCase *tb = tcase_create("burst");
    tcase_set_timeout(tb, 120);
    tcase_add_checked_fixture(tb, setup_dns, teardown_dns);
    tcase_add_test(tb, burst_10k);
    tcase_add_test(tb, tcp_queries);
    suite_add_tcase(s, tb);

    TCase *to = tcase_create("offline");
    tcase_set_timeout(to, 60);
    tcase_add_checked_fixture(to, setup_plain, teardown_plain);
    tcase_add_test(to, servers_option);
    tcase_add_test(to, interleave);
    tcase_add_test(to, dns_timeout);
    tcase_add_test(to, localhost_without_dns);
    tcase_add_test(to, network_unreachable);
    suite_add_tcase(s, to);
    return s;
}

int main(void)
{
    return th_run_suite(dns_suite());
}
