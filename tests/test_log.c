/* SPDX-License-Identifier: MIT */
/* The logging hook: the library prints nothing by default, a log function
 * receives messages at and above its level and nothing below, the user data
 * always travels with its own function, and real events (a failed connect,
 * a client that fails its TLS handshake) produce messages. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "internal.h"

#ifndef TETHER_CERTS_DIR
#error "TETHER_CERTS_DIR must name the certs/ directory"
#endif

#define MAX_RECORDS 64

/* What the log functions received. Guarded by rec_lock: the thread test
 * logs from several threads at once. */
struct record {
    tether_log_level level;
    char msg[1100];
    void *ud;
};

static pthread_mutex_t rec_lock = PTHREAD_MUTEX_INITIALIZER;
static struct record records[MAX_RECORDS];
static int nrecords;
static int ud_mismatches;

static int tag_a, tag_b; /* user data: only their addresses matter */

static void record_fn(tether_log_level level, const char *msg, void *ud)
{
    pthread_mutex_lock(&rec_lock);
    if (nrecords < MAX_RECORDS) {
        records[nrecords].level = level;
        snprintf(records[nrecords].msg, sizeof records[nrecords].msg, "%s", msg);
        records[nrecords].ud = ud;
        nrecords++;
    }
    pthread_mutex_unlock(&rec_lock);
}

static int count_records(void)
{
    pthread_mutex_lock(&rec_lock);
    int n = nrecords;
    pthread_mutex_unlock(&rec_lock);
    return n;
}

/* Index of the first record containing `needle`, or -1. */
static int find_record(const char *needle)
{
    int found = -1;
    pthread_mutex_lock(&rec_lock);
    for (int i = 0; i < nrecords && found < 0; i++) {
        if (strstr(records[i].msg, needle) != NULL) {
            found = i;
        }
    }
    pthread_mutex_unlock(&rec_lock);
    return found;
}

static void log_setup(void)
{
    th_setup();
    nrecords = 0;
    ud_mismatches = 0;
}

static void log_teardown(void)
{
    tether_set_log(NULL, TETHER_LOG_DEBUG, NULL);
    th_teardown();
}

/* ---- events that the library logs --------------------------------------- */

struct dial_state {
    volatile bool closed;
    int reason;
};

static void dial_on_close(tether_conn *c, int reason, void *ud)
{
    (void)c;
    struct dial_state *st = ud;
    st->reason = reason;
    st->closed = true;
}

/* Dials a port nobody listens on (one a listener had and gave up) and runs
 * the loop until the connection has ended; returns the URL. */
static const char *dial_refused(void)
{
    static char url[64];
    tether_listener *l = th_listen_tcp(NULL);
    snprintf(url, sizeof url, "%s", th_url_of(l));
    tether_listener_close(l);
    struct dial_state st = {0};
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.userdata = &st;
    co.on_close = dial_on_close;
    tether_conn *c;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, url, &co, NULL), TETHER_OK);
    ck_assert(th_run_until(&st.closed, 5000));
    ck_assert_int_eq(st.reason, TETHER_ECONNREFUSED);
    return url;
}

struct tls_listener_state {
    volatile bool got_error;
    char detail[TETHER_ERROR_MSG_MAX];
};

static void tls_on_error(tether_listener *l, int err, const char *detail, void *ud)
{
    (void)l, (void)err;
    struct tls_listener_state *st = ud;
    snprintf(st->detail, sizeof st->detail, "%s", detail);
    st->got_error = true;
}

static void plain_on_connect(tether_conn *c, int status, void *ud)
{
    (void)ud;
    if (status == TETHER_OK) {
        /* Not a TLS ClientHello: the server's handshake fails at once. */
        tether_conn_send(c, "hello, this is not TLS", 22);
    }
}

/* A plain-TCP client talks to a TLS listener: the accepted connection
 * fails its handshake, which the listener reports (and logs at WARN). */
static void fail_tls_handshake(char *detail, size_t len)
{
    tether_tls_opts to;
    tether_tls_opts_init(&to);
    to.cert_file = TETHER_CERTS_DIR "/server.pem";
    to.key_file = TETHER_CERTS_DIR "/server.key";
    tether_tls_config *cfg;
    tether_error err;
    ck_assert_msg(tether_tls_config_new(&cfg, &to, &err) == TETHER_OK, "%s", err.message);
    tether_conn_opts sco;
    tether_conn_opts_init(&sco);
    sco.tls = cfg;
    struct tls_listener_state st = {0};
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &sco;
    lo.on_error = tls_on_error;
    lo.userdata = &st;
    tether_listener *l;
    ck_assert_msg(tether_listen(&l, th_loop, "tls://127.0.0.1:0", &lo, &err) == TETHER_OK, "%s",
                  err.message);
    tether_tls_config_unref(cfg);

    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", tether_listener_port(l));
    struct dial_state ds = {0};
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.userdata = &ds;
    co.on_connect = plain_on_connect;
    co.on_close = dial_on_close;
    tether_conn *c;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, url, &co, NULL), TETHER_OK);
    ck_assert(th_run_until(&st.got_error, 5000));
    ck_assert(th_run_until(&ds.closed, 5000));
    tether_listener_close(l);
    snprintf(detail, len, "%s", st.detail);
}

/* ---- tests --------------------------------------------------------------- */

/* With no log function the library writes nothing to stdout or stderr, even
 * when things go wrong, and no message is recorded anywhere. */
START_TEST(prints_nothing_by_default)
{
    char path[] = "/tmp/tether-test-log.XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    ck_assert(saved_out >= 0 && saved_err >= 0);
    dup2(fd, 1);
    dup2(fd, 2);

    for (int lv = TETHER_LOG_ERROR; lv <= TETHER_LOG_DEBUG; lv++) {
        tether__log((tether_log_level)lv, "must not appear %d", lv);
    }
    dial_refused();
    char detail[TETHER_ERROR_MSG_MAX];
    fail_tls_handshake(detail, sizeof detail);

    fflush(stdout);
    fflush(stderr);
    off_t size = lseek(fd, 0, SEEK_END);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    close(fd);
    ck_assert_msg(size == 0, "the library wrote %lld bytes with no log function set",
                  (long long)size);
    ck_assert_int_eq(count_records(), 0);
    ck_assert_ptr_nonnull(strstr(detail, "does not speak TLS"));
}
END_TEST

/* At DEBUG every level arrives, in order, with its text and user data. */
START_TEST(delivers_every_level_at_debug)
{
    tether_set_log(record_fn, TETHER_LOG_DEBUG, &tag_a);
    tether__log(TETHER_LOG_ERROR, "e %d", 1);
    tether__log(TETHER_LOG_WARN, "w %s", "two");
    tether__log(TETHER_LOG_INFO, "i %c", '3');
    tether__log(TETHER_LOG_DEBUG, "d %zu", (size_t)4);
    ck_assert_int_eq(count_records(), 4);
    const char *want[] = {"e 1", "w two", "i 3", "d 4"};
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(records[i].level, (tether_log_level)i);
        ck_assert_str_eq(records[i].msg, want[i]);
        ck_assert_ptr_eq(records[i].ud, &tag_a);
    }
}
END_TEST

/* A level filters out everything less important, and NULL turns it off. */
START_TEST(filters_by_level)
{
    for (int set = TETHER_LOG_ERROR; set <= TETHER_LOG_DEBUG; set++) {
        nrecords = 0;
        tether_set_log(record_fn, (tether_log_level)set, NULL);
        for (int lv = TETHER_LOG_ERROR; lv <= TETHER_LOG_DEBUG; lv++) {
            tether__log((tether_log_level)lv, "level %d", lv);
        }
        ck_assert_int_eq(count_records(), set + 1);
        for (int i = 0; i <= set; i++) {
            ck_assert_int_eq(records[i].level, (tether_log_level)i);
        }
    }
    nrecords = 0;
    tether_set_log(NULL, TETHER_LOG_DEBUG, &tag_a);
    tether__log(TETHER_LOG_ERROR, "off");
    ck_assert_int_eq(count_records(), 0);

    /* Out-of-range levels are clamped into the enumeration. */
    tether_set_log(record_fn, (tether_log_level)99, NULL);
    tether__log(TETHER_LOG_DEBUG, "clamped high");
    ck_assert_int_eq(count_records(), 1);
    tether_set_log(record_fn, (tether_log_level)-5, NULL);
    tether__log(TETHER_LOG_WARN, "filtered");
    tether__log(TETHER_LOG_ERROR, "clamped low");
    ck_assert_int_eq(count_records(), 2);
    ck_assert_str_eq(records[1].msg, "clamped low");
}
END_TEST

START_TEST(level_names_and_long_messages)
{
    ck_assert_str_eq(tether_log_level_name(TETHER_LOG_ERROR), "error");
    ck_assert_str_eq(tether_log_level_name(TETHER_LOG_WARN), "warn");
    ck_assert_str_eq(tether_log_level_name(TETHER_LOG_INFO), "info");
    ck_assert_str_eq(tether_log_level_name(TETHER_LOG_DEBUG), "debug");
    ck_assert_str_eq(tether_log_level_name((tether_log_level)7), "?");

    /* A message longer than the internal buffer is cut short, not overrun. */
    char big[4096];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    tether_set_log(record_fn, TETHER_LOG_INFO, NULL);
    tether__log(TETHER_LOG_INFO, "%s", big);
    ck_assert_int_eq(count_records(), 1);
    size_t n = strlen(records[0].msg);
    ck_assert(n > 500 && n < sizeof big - 1);
}
END_TEST

/* Real events: a refused connect at DEBUG (and not at WARN), a listener
 * starting at INFO, and a client failing its TLS handshake on a listener at
 * WARN, with the same text the listener's on_error gets. */
START_TEST(logs_library_events)
{
    tether_set_log(record_fn, TETHER_LOG_WARN, &tag_b);
    dial_refused();
    ck_assert_int_eq(count_records(), 0);

    tether_set_log(record_fn, TETHER_LOG_DEBUG, &tag_b);
    const char *url = dial_refused();
    char want[128];
    snprintf(want, sizeof want, "connect to %s: connection refused", url);
    int i = find_record(want);
    ck_assert_msg(i >= 0, "no record contains '%s' (%d records)", want, count_records());
    ck_assert_int_eq(records[i].level, TETHER_LOG_DEBUG);
    ck_assert_ptr_eq(records[i].ud, &tag_b);
    ck_assert_ptr_nonnull(strstr(records[i].msg, "TETHER_ECONNREFUSED"));

    /* At INFO, a listener says where it listens. */
    nrecords = 0;
    tether_set_log(record_fn, TETHER_LOG_INFO, &tag_b);
    tether_listener *l = th_listen_tcp(NULL);
    snprintf(want, sizeof want, "listening on %s", th_url_of(l));
    i = find_record(want);
    ck_assert_msg(i >= 0, "no record '%s'", want);
    ck_assert_int_eq(records[i].level, TETHER_LOG_INFO);
    tether_listener_close(l);

    nrecords = 0;
    tether_set_log(record_fn, TETHER_LOG_WARN, &tag_b);
    char detail[TETHER_ERROR_MSG_MAX];
    fail_tls_handshake(detail, sizeof detail);
    ck_assert_ptr_nonnull(strstr(detail, "does not speak TLS"));
    i = find_record(detail);
    ck_assert_msg(i >= 0, "the listener's error '%s' was not logged", detail);
    ck_assert_int_eq(records[i].level, TETHER_LOG_WARN);
    for (int k = 0; k < count_records(); k++) {
        ck_assert_int_le(records[k].level, TETHER_LOG_WARN);
    }
}
END_TEST

/* ---- thread-safety ------------------------------------------------------- */

static void check_a(tether_log_level level, const char *msg, void *ud)
{
    (void)level, (void)msg;
    if (ud != &tag_a) {
        __atomic_add_fetch(&ud_mismatches, 1, __ATOMIC_RELAXED);
    }
}

static void check_b(tether_log_level level, const char *msg, void *ud)
{
    (void)level, (void)msg;
    if (ud != &tag_b) {
        __atomic_add_fetch(&ud_mismatches, 1, __ATOMIC_RELAXED);
    }
}

static volatile bool threads_stop;

static void *logger_thread(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&threads_stop, __ATOMIC_RELAXED)) {
        tether__log(TETHER_LOG_INFO, "from a thread %d", 1);
    }
    return NULL;
}

/* Four threads log while the main thread keeps swapping between two
 * functions, each with its own user data, and turning logging off: a
 * message never reaches one function with the other's user data. */
START_TEST(set_log_is_thread_safe)
{
    pthread_t tids[4];
    threads_stop = false;
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(pthread_create(&tids[i], NULL, logger_thread, NULL), 0);
    }
    for (int i = 0; i < 20000; i++) {
        switch (i % 3) {
        case 0:
            tether_set_log(check_a, TETHER_LOG_DEBUG, &tag_a);
            break;
        case 1:
            tether_set_log(check_b, TETHER_LOG_INFO, &tag_b);
            break;
        default:
            tether_set_log(NULL, TETHER_LOG_DEBUG, NULL);
            break;
        }
    }
    __atomic_store_n(&threads_stop, true, __ATOMIC_RELAXED);
    for (int i = 0; i < 4; i++) {
        pthread_join(tids[i], NULL);
    }
    ck_assert_int_eq(ud_mismatches, 0);
}
END_TEST

/* The log function may replace itself. */
static void self_replacing(tether_log_level level, const char *msg, void *ud)
{
    record_fn(level, msg, ud);
    tether_set_log(NULL, TETHER_LOG_ERROR, NULL);
}

START_TEST(set_log_from_inside_the_log_function)
{
    tether_set_log(self_replacing, TETHER_LOG_ERROR, NULL);
    tether__log(TETHER_LOG_ERROR, "first");
    tether__log(TETHER_LOG_ERROR, "second");
    ck_assert_int_eq(count_records(), 1);
    ck_assert_str_eq(records[0].msg, "first");
}
END_TEST

static Suite *log_suite(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("log");
    tcase_add_checked_fixture(tc, log_setup, log_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, prints_nothing_by_default);
    tcase_add_test(tc, delivers_every_level_at_debug);
    tcase_add_test(tc, filters_by_level);
    tcase_add_test(tc, level_names_and_long_messages);
    tcase_add_test(tc, logs_library_events);
    tcase_add_test(tc, set_log_is_thread_safe);
    tcase_add_test(tc, set_log_from_inside_the_log_function);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(log_suite());
}
