/* SPDX-License-Identifier: MIT */
/* What an application learns about a TLS peer and how it authorises it
 * (lib/tls_peer.c): the verify hook on clients (certificate pinning) and
 * servers (a SPIFFE ID allow-list), with the refusal seen on both sides
 * under TLS 1.2 and 1.3; the alerts a hook can send; tether_tls_info with
 * URI SANs and truncation; the peer certificate as DER and PEM; and the
 * OpenSSL objects of <tether/openssl.h>. Certificates come from certs/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <tether/openssl.h>

#include "helpers.h"

#ifndef TETHER_CERTS_DIR
#error "TETHER_CERTS_DIR must name the certs/ directory"
#endif

#define CERT(name) TETHER_CERTS_DIR "/" name

#define ASSERT_HAS(str, sub)                                                                       \
    ck_assert_msg(strstr((str), (sub)) != NULL, "'%s' does not contain '%s'", (str), (sub))

/* ---- certificates --------------------------------------------------------- */

static X509 *load_x509(const char *path)
{
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    ck_assert_ptr_nonnull(x);
    return x;
}

static void sha256(const uint8_t *p, size_t n, uint8_t out[32])
{
    unsigned int len = 0;
    ck_assert_int_eq(EVP_Digest(p, n, out, &len, EVP_sha256(), NULL), 1);
    ck_assert_uint_eq(len, 32);
}

/* The pin of a certificate file: SHA-256 of its DER. */
static void pin_of(const char *path, uint8_t out[32])
{
    X509 *x = load_x509(path);
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    ck_assert_int_gt(n, 0);
    sha256(der, (size_t)n, out);
    OPENSSL_free(der);
    X509_free(x);
}

/* ---- hooks ---------------------------------------------------------------- */

/* What a hook saw, for the assertions. */
struct seen {
    int calls;
    bool is_server;
    bool preverified;
    int verify_error;
    char verify_text[TETHER_ERROR_MSG_MAX];
    char server_name[256];
    size_t chain_len;
};

static void note(struct seen *s, const tether_tls_verify_info *vi)
{
    ck_assert_uint_eq(vi->size, sizeof *vi);
    s->calls++;
    s->is_server = vi->is_server;
    s->preverified = vi->preverified;
    s->verify_error = vi->verify_error;
    snprintf(s->verify_text, sizeof s->verify_text, "%s", vi->verify_text);
    snprintf(s->server_name, sizeof s->server_name, "%s", vi->server_name);
    s->chain_len = vi->chain_len;
}

/* Client-side pinning: the server's certificate must have this SHA-256. */
struct pin {
    uint8_t want[32];
    struct seen seen;
};

static int pin_hook(const tether_tls_verify_info *vi, char *reason, size_t reason_size, void *ud)
{
    struct pin *p = ud;
    note(&p->seen, vi);
    ck_assert_uint_ge(vi->chain_len, 1);
    uint8_t got[32];
    sha256(vi->chain[0].der, vi->chain[0].len, got);
    if (memcmp(got, p->want, sizeof got) == 0) {
        return 0;
    }
    snprintf(reason, reason_size, "pin mismatch: sha256 %02x%02x%02x%02x... is not the pinned one",
             got[0], got[1], got[2], got[3]);
    return TETHER_TLS_ALERT_BAD_CERTIFICATE;
}

/* Server-side authorisation: the client's URI SAN must be this SPIFFE ID. */
struct allow {
    const char *spiffe_id;
    int alert; /* what to refuse with */
    struct seen seen;
};

static int spiffe_hook(const tether_tls_verify_info *vi, char *reason, size_t reason_size, void *ud)
{
    struct allow *a = ud;
    note(&a->seen, vi);
    const unsigned char *p = vi->chain[0].der;
    X509 *x = d2i_X509(NULL, &p, (long)vi->chain[0].len);
    ck_assert_ptr_nonnull(x);
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    char uri[256] = "";
    for (int i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_URI) {
            snprintf(uri, sizeof uri, "%.*s", ASN1_STRING_length(g->d.ia5),
                     (const char *)ASN1_STRING_get0_data(g->d.ia5));
        }
    }
    GENERAL_NAMES_free(gens);
    X509_free(x);
    if (strcmp(uri, a->spiffe_id) == 0) {
        return 0;
    }
    snprintf(reason, reason_size, "'%s' is not an allowed SPIFFE ID",
             uri[0] != '\0' ? uri : "(no URI SAN)");
    return a->alert;
}

/* ---- configurations ------------------------------------------------------- */

struct cfg_spec {
    const char *cert; /* file stem in certs/, NULL for none */
    int max_version;
    tether_tls_client_auth client_auth;
    tether_tls_verify_cb hook;
    void *hook_ud;
    bool insecure;
    bool no_resumption;
    bool no_wait;
    const char *ca;          /* default ca.pem */
    const char *server_name; /* clients: the SNI, NULL for the URL's host */
};

static tether_tls_config *mk_cfg(const struct cfg_spec *sp)
{
    char cert[512];
    char key[512];
    tether_tls_opts o;
    tether_tls_opts_init(&o);
    if (sp->cert != NULL) {
        snprintf(cert, sizeof cert, "%s/%s.pem", TETHER_CERTS_DIR, sp->cert);
        snprintf(key, sizeof key, "%s/%s.key", TETHER_CERTS_DIR, sp->cert);
        o.cert_file = cert;
        o.key_file = key;
    }
    o.ca_file = sp->ca != NULL ? sp->ca : CERT("ca.pem");
    o.max_version = (tether_tls_version)sp->max_version;
    o.client_auth = sp->client_auth;
    o.verify_cb = sp->hook;
    o.verify_userdata = sp->hook_ud;
    o.insecure_skip_verify = sp->insecure;
    o.no_resumption = sp->no_resumption;
    o.no_client_cert_wait = sp->no_wait;
    o.server_name = sp->server_name;
    tether_tls_config *cfg = NULL;
    tether_error err;
    int rv = tether_tls_config_new(&cfg, &o, &err);
    ck_assert_msg(rv == TETHER_OK, "tls config: %s", err.message);
    return cfg;
}

/* ---- a server on th_loop -------------------------------------------------- */

struct srv {
    tether_listener *l;
    tether_tls_config *cfg;
    int port;
    int accepted;
    int errors;
    int last_error;
    char error_detail[TETHER_ERROR_MSG_MAX];
    tether_tls_info info;
    bool greet; /* send "hello" on accept */
    long msgs;  /* messages received on all connections */
    size_t bytes;
    bool bad; /* a message that is not all 'x' */
};

static struct srv S;

static void srv_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    S.accepted++;
    ck_assert_int_eq(tether_conn_tls_info(c, &S.info), TETHER_OK);
    if (S.greet) {
        ck_assert_int_eq(tether_conn_send(c, "hello", 5), TETHER_OK);
    }
}

static void srv_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)c;
    (void)ud;
    S.msgs++;
    S.bytes += len;
    for (size_t i = 0; i < len; i++) {
        S.bad |= data[i] != 'x';
    }
}

static void srv_error(tether_listener *l, int err, const char *detail, void *ud)
{
    (void)l;
    (void)ud;
    S.errors++;
    S.last_error = err;
    snprintf(S.error_detail, sizeof S.error_detail, "%s", detail);
}

static void srv_up(const struct cfg_spec *sp)
{
    memset(&S, 0, sizeof S);
    S.cfg = mk_cfg(sp);
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.tls = S.cfg;
    o.on_message = srv_message;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = srv_accept;
    lo.on_error = srv_error;
    lo.conn_opts = &o;
    tether_error err;
    int rv = tether_listen(&S.l, th_loop, "tls://127.0.0.1:0", &lo, &err);
    ck_assert_msg(rv == TETHER_OK, "listen: %s", err.message);
    S.port = tether_listener_port(S.l);
}

static void srv_down(void)
{
    tether_listener_close(S.l);
    tether_tls_config_unref(S.cfg);
}

static bool srv_has_error(void *arg)
{
    (void)arg;
    return S.errors > 0;
}

/* ---- a client on th_loop -------------------------------------------------- */

struct cli {
    tether_conn *c;
    bool connect_done;
    int connect_status;
    char connect_detail[TETHER_ERROR_MSG_MAX];
    bool closed;
    int close_reason;
    char close_detail[TETHER_ERROR_MSG_MAX];
    long got;
    char first[16];
};

static void cli_connect(tether_conn *c, int status, void *ud)
{
    struct cli *k = ud;
    k->connect_done = true;
    k->connect_status = status;
    snprintf(k->connect_detail, sizeof k->connect_detail, "%s", tether_conn_last_error(c));
}

static void cli_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)c;
    struct cli *k = ud;
    if (k->got++ == 0) {
        snprintf(k->first, sizeof k->first, "%.*s", (int)len, (const char *)data);
    }
}

static void cli_close(tether_conn *c, int reason, void *ud)
{
    struct cli *k = ud;
    k->closed = true;
    k->close_reason = reason;
    snprintf(k->close_detail, sizeof k->close_detail, "%s", tether_conn_last_error(c));
    k->c = NULL;
}

/* Dials tls://HOST:S.port with cfg and waits for on_connect; returns its status. */
static int cli_dial(struct cli *k, const char *host, tether_tls_config *cfg)
{
    memset(k, 0, sizeof *k);
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.userdata = k;
    o.on_connect = cli_connect;
    o.on_message = cli_message;
    o.on_close = cli_close;
    o.tls = cfg;
    o.connect_timeout_ms = 10000;
    char url[128];
    snprintf(url, sizeof url, "tls://%s:%d", host, S.port);
    th_dial(&k->c, url, &o);
    ck_assert_msg(th_run_until(&k->connect_done, 15000), "no connect outcome for %s", url);
    return k->connect_status;
}

static void cli_wait_closed(struct cli *k)
{
    ck_assert(th_run_until(&k->closed, 15000));
}

static void cli_finish(struct cli *k)
{
    if (k->c != NULL) {
        tether_conn_close(k->c);
    }
    cli_wait_closed(k);
}

static void cli_wait_msgs(struct cli *k, long n)
{
    uint64_t until = th_now_ms() + 10000;
    while (k->got < n && !k->closed && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_msg(k->got == n, "got %ld of %ld messages (closed: %s)", k->got, n, k->close_detail);
}

/* ---- client: pinning ------------------------------------------------------ */

/* The right pin is accepted and the hook sees the verified chain; a wrong
 * pin fails the connect with the hook's reason, and the server learns of
 * it through the alert. _i: 0 = TLS 1.3, 1 = TLS 1.2. */
START_TEST(client_pins_the_server_certificate)
{
    int ver = _i == 0 ? TETHER_TLS_VERSION_1_3 : TETHER_TLS_VERSION_1_2;
    srv_up(&(struct cfg_spec){.cert = "server", .max_version = ver});
    S.greet = true;
    struct pin p;
    memset(&p, 0, sizeof p);
    pin_of(CERT("server.pem"), p.want);
    tether_tls_config *ccfg = mk_cfg(&(struct cfg_spec){.hook = pin_hook, .hook_ud = &p});

    struct cli k;
    ck_assert_msg(cli_dial(&k, "localhost", ccfg) == TETHER_OK, "%s", k.connect_detail);
    cli_wait_msgs(&k, 1);
    ck_assert_str_eq(k.first, "hello");
    ck_assert_int_eq(p.seen.calls, 1);
    ck_assert(!p.seen.is_server);
    ck_assert(p.seen.preverified);
    ck_assert_int_eq(p.seen.verify_error, 0);
    ck_assert_str_eq(p.seen.verify_text, "ok");
    ck_assert_str_eq(p.seen.server_name, "localhost");
    ck_assert_uint_ge(p.seen.chain_len, 1);
    tether_tls_info info;
    ck_assert_int_eq(tether_conn_tls_info(k.c, &info), TETHER_OK);
    ck_assert(info.peer_verified);
    cli_finish(&k);

    /* A resumed session presents no certificate: the hook is not asked
     * again (the session was authorised when it was made). */
    ck_assert_int_eq(cli_dial(&k, "localhost", ccfg), TETHER_OK);
    ck_assert_int_eq(tether_conn_tls_info(k.c, &info), TETHER_OK);
    ck_assert(info.resumed);
    ck_assert_int_eq(p.seen.calls, 1);
    cli_finish(&k);
    tether_tls_config_unref(ccfg);

    /* The wrong pin: the handshake fails on both sides. */
    p.want[0] ^= 0xFF;
    memset(&p.seen, 0, sizeof p.seen);
    ccfg = mk_cfg(&(struct cfg_spec){.hook = pin_hook, .hook_ud = &p});
    ck_assert_int_eq(cli_dial(&k, "localhost", ccfg), TETHER_ECERT);
    ASSERT_HAS(k.connect_detail, "certificate rejected by the verify hook: the server certificate "
                                 "'CN=localhost,O=tether': pin mismatch: sha256 ");
    ck_assert_int_eq(p.seen.calls, 1);
    cli_wait_closed(&k);
    ck_assert_int_eq(k.close_reason, TETHER_ECERT);
    ck_assert(th_run_until_pred(srv_has_error, NULL, 10000));
    ck_assert_int_eq(S.last_error, TETHER_ECERT);
    ASSERT_HAS(S.error_detail, "the client rejected our certificate (alert 'bad certificate')");
    ck_assert_int_eq(S.accepted, 2); /* the first two; the refused one never was */

    tether_tls_config_unref(ccfg);
    srv_down();
}
END_TEST

/* A hook cannot accept what OpenSSL refused (it sees why), except with
 * insecure_skip_verify, where it alone decides: pinning a certificate no
 * CA we trust has issued. */
START_TEST(client_hook_and_insecure_skip_verify)
{
    srv_up(&(struct cfg_spec){.cert = "untrusted"});
    struct pin p;
    memset(&p, 0, sizeof p);
    pin_of(CERT("untrusted.pem"), p.want);

    tether_tls_config *strict = mk_cfg(&(struct cfg_spec){.hook = pin_hook, .hook_ud = &p});
    struct cli k;
    ck_assert_int_eq(cli_dial(&k, "localhost", strict), TETHER_ECERT);
    ASSERT_HAS(k.connect_detail, "unknown CA");
    ck_assert_int_eq(p.seen.calls, 1);
    ck_assert(!p.seen.preverified);
    ck_assert_int_ne(p.seen.verify_error, 0);
    ASSERT_HAS(p.seen.verify_text, "certificate verify failed: unknown CA");
    cli_wait_closed(&k);
    tether_tls_config_unref(strict);

    memset(&p.seen, 0, sizeof p.seen);
    tether_tls_config *pinned =
        mk_cfg(&(struct cfg_spec){.hook = pin_hook, .hook_ud = &p, .insecure = true});
    ck_assert_msg(cli_dial(&k, "localhost", pinned) == TETHER_OK, "%s", k.connect_detail);
    ck_assert_int_eq(p.seen.calls, 1);
    ck_assert(!p.seen.preverified);
    ck_assert_str_eq(p.seen.server_name, "");
    tether_tls_info info;
    ck_assert_int_eq(tether_conn_tls_info(k.c, &info), TETHER_OK);
    ck_assert(!info.peer_verified); /* pinned, not verified */
    cli_finish(&k);

    /* ...and it still refuses the wrong one (a new configuration: the
     * old one would resume its session without asking). */
    tether_tls_config_unref(pinned);
    p.want[5] ^= 1;
    pinned = mk_cfg(&(struct cfg_spec){.hook = pin_hook, .hook_ud = &p, .insecure = true});
    ck_assert_int_eq(cli_dial(&k, "localhost", pinned), TETHER_ECERT);
    ASSERT_HAS(k.connect_detail, "pin mismatch");
    cli_wait_closed(&k);
    tether_tls_config_unref(pinned);
    srv_down();
}
END_TEST

/* ---- server: authorising clients ------------------------------------------ */

/* A server admits only one SPIFFE ID. The refused client's connect fails,
 * also under TLS 1.3 where its own side of the handshake is done before
 * the server has judged its certificate; the admitted one connects and
 * receives what the server sent at once. _i: 0 = TLS 1.3, 1 = TLS 1.2. */
START_TEST(server_authorises_clients_by_spiffe_id)
{
    int ver = _i == 0 ? TETHER_TLS_VERSION_1_3 : TETHER_TLS_VERSION_1_2;
    struct allow a = {.spiffe_id = "spiffe://tether.test/ns/prod/sa/worker",
                      .alert = TETHER_TLS_ALERT_BAD_CERTIFICATE};
    srv_up(&(struct cfg_spec){.cert = "server",
                              .max_version = ver,
                              .client_auth = TETHER_TLS_CLIENT_AUTH_REQUIRED,
                              .hook = spiffe_hook,
                              .hook_ud = &a});
    S.greet = true;

    tether_tls_config *alice = mk_cfg(&(struct cfg_spec){.cert = "client"});
    struct cli k;
    int st = cli_dial(&k, "localhost", alice);
    ck_assert_msg(st == TETHER_ECERT, "a refused client got %s (%s)", tether_err_name(st),
                  k.connect_detail);
    ASSERT_HAS(k.connect_detail, "the server rejected our certificate (alert 'bad certificate')");
    ck_assert_int_eq(k.got, 0);
    cli_wait_closed(&k);
    ck_assert_int_eq(k.close_reason, TETHER_ECERT);
    ck_assert(th_run_until_pred(srv_has_error, NULL, 10000));
    ck_assert_int_eq(S.last_error, TETHER_ECERT);
    ASSERT_HAS(S.error_detail, "certificate rejected by the verify hook: the client certificate "
                               "'CN=alice,O=tether': '(no URI SAN)' is not an allowed SPIFFE ID");
    ck_assert_int_eq(S.accepted, 0);
    ck_assert_int_eq(a.seen.calls, 1);
    ck_assert(a.seen.is_server);
    ck_assert(a.seen.preverified);
    ck_assert_str_eq(a.seen.server_name, "localhost"); /* the SNI */
    tether_tls_config_unref(alice);

    tether_tls_config *worker = mk_cfg(&(struct cfg_spec){.cert = "spiffe"});
    ck_assert_msg(cli_dial(&k, "localhost", worker) == TETHER_OK, "%s", k.connect_detail);
    cli_wait_msgs(&k, 1);
    ck_assert_str_eq(k.first, "hello");
    ck_assert_int_eq(S.accepted, 1);
    ck_assert(S.info.peer_verified);
    ck_assert_str_eq(S.info.peer_sans, "URI:spiffe://tether.test/ns/prod/sa/worker");
    ck_assert_str_eq(S.info.peer_common_name, "workload");
    ck_assert_uint_eq(S.info.truncated, 0);
    cli_finish(&k);
    tether_tls_config_unref(worker);
    srv_down();
}
END_TEST

/* Each alert a hook can choose reaches the client under its own name;
 * _i indexes the table. */
static const struct {
    int alert;
    const char *name;
} ALERTS[] = {
    {TETHER_TLS_ALERT_BAD_CERTIFICATE, "bad certificate"},
    {TETHER_TLS_ALERT_UNSUPPORTED_CERTIFICATE, "unsupported certificate"},
    {TETHER_TLS_ALERT_CERTIFICATE_REVOKED, "certificate revoked"},
    {TETHER_TLS_ALERT_CERTIFICATE_EXPIRED, "certificate expired"},
    {TETHER_TLS_ALERT_UNKNOWN_CA, "unknown CA"},
    {12345, "bad certificate"}, /* anything else */
};

START_TEST(hook_alerts_reach_the_peer)
{
    struct allow a = {.spiffe_id = "nobody", .alert = ALERTS[_i].alert};
    srv_up(&(struct cfg_spec){.cert = "server",
                              .client_auth = TETHER_TLS_CLIENT_AUTH_REQUIRED,
                              .hook = spiffe_hook,
                              .hook_ud = &a});
    tether_tls_config *ccfg = mk_cfg(&(struct cfg_spec){.cert = "spiffe"});
    struct cli k;
    ck_assert_int_eq(cli_dial(&k, "localhost", ccfg), TETHER_ECERT);
    char want[128];
    snprintf(want, sizeof want, "the server rejected our certificate (alert '%s')",
             ALERTS[_i].name);
    ASSERT_HAS(k.connect_detail, want);
    cli_wait_closed(&k);
    ck_assert(th_run_until_pred(srv_has_error, NULL, 10000));
    ASSERT_HAS(S.error_detail, "is not an allowed SPIFFE ID");
    tether_tls_config_unref(ccfg);
    srv_down();
}
END_TEST

/* A TLS 1.3 client waits for the server's word on its certificate. A
 * tether server without resumption still sends the ticket that carries
 * it, so the wait ends; with no_client_cert_wait the client does not wait
 * and learns of a refusal after on_connect, through on_close. */
START_TEST(tls13_verdict_without_resumption_and_without_waiting)
{
    struct allow a = {.spiffe_id = "spiffe://tether.test/ns/prod/sa/worker",
                      .alert = TETHER_TLS_ALERT_BAD_CERTIFICATE};
    srv_up(&(struct cfg_spec){.cert = "server",
                              .client_auth = TETHER_TLS_CLIENT_AUTH_REQUIRED,
                              .hook = spiffe_hook,
                              .hook_ud = &a,
                              .no_resumption = true});
    tether_tls_config *worker = mk_cfg(&(struct cfg_spec){.cert = "spiffe"});
    struct cli k;
    ck_assert_msg(cli_dial(&k, "localhost", worker) == TETHER_OK, "%s", k.connect_detail);
    tether_tls_info info;
    ck_assert_int_eq(tether_conn_tls_info(k.c, &info), TETHER_OK);
    ck_assert_str_eq(info.version, "TLSv1.3");
    cli_finish(&k);
    /* The client kept that ticket and offers it; the server cannot resume
     * it. */
    ck_assert_int_eq(cli_dial(&k, "localhost", worker), TETHER_OK);
    ck_assert_int_eq(tether_conn_tls_info(k.c, &info), TETHER_OK);
    ck_assert(!info.resumed);
    cli_finish(&k);
    tether_tls_config_unref(worker);

    tether_tls_config *eager = mk_cfg(&(struct cfg_spec){.cert = "client", .no_wait = true});
    ck_assert_int_eq(cli_dial(&k, "localhost", eager), TETHER_OK);
    ck_assert_int_eq(tether_conn_send(k.c, "x", 1), TETHER_OK);
    cli_wait_closed(&k);
    ck_assert_msg(k.close_reason == TETHER_ECERT, "%s: %s", tether_err_name(k.close_reason),
                  k.close_detail);
    ASSERT_HAS(k.close_detail, "the server rejected our certificate (alert 'bad certificate')");
    tether_tls_config_unref(eager);
    srv_down();
}
END_TEST

/* ---- tether_tls_info, the certificate, tether/openssl.h ------------------- */

START_TEST(peer_certificate_and_truncation)
{
    srv_up(&(struct cfg_spec){.cert = "long"});
    tether_tls_config *ccfg = mk_cfg(&(struct cfg_spec){0});
    struct cli k;
    ck_assert_msg(cli_dial(&k, "localhost", ccfg) == TETHER_OK, "%s", k.connect_detail);

    /* The subject and the SANs do not fit: cut, and said so. */
    tether_tls_info info;
    ck_assert_int_eq(tether_conn_tls_info(k.c, &info), TETHER_OK);
    ck_assert_uint_eq(info.truncated, TETHER_TLS_INFO_PEER_SUBJECT | TETHER_TLS_INFO_PEER_SANS);
    ck_assert_uint_eq(strlen(info.peer_subject), TETHER_TLS_INFO_STR_MAX - 1);
    ck_assert_str_eq(info.peer_common_name, "localhost");
    /* SANs are cut between entries, never inside one: the fifth DNS name
     * and the URI did not fit. */
    ck_assert_str_eq(info.peer_sans, "DNS:localhost,IP:127.0.0.1,IP:::1,"
                                     "DNS:a-rather-long-service-name-number-one.tether.test,"
                                     "DNS:a-rather-long-service-name-number-two.tether.test,"
                                     "DNS:a-rather-long-service-name-number-three.tether.test,"
                                     "DNS:a-rather-long-service-name-number-four.tether.test");

    /* The whole certificate, DER and PEM, equal to the file. */
    X509 *file = load_x509(CERT("long.pem"));
    unsigned char *want_der = NULL;
    int want_len = i2d_X509(file, &want_der);
    size_t n = 99;
    ck_assert_int_eq(tether_conn_tls_peer_cert(k.c, TETHER_TLS_CERT_DER, NULL, 0, &n),
                     TETHER_EMSGSIZE);
    ck_assert_uint_eq(n, (size_t)want_len);
    uint8_t small[16];
    ck_assert_int_eq(tether_conn_tls_peer_cert(k.c, TETHER_TLS_CERT_DER, small, sizeof small, &n),
                     TETHER_EMSGSIZE);
    uint8_t *der = malloc(n);
    ck_assert_int_eq(tether_conn_tls_peer_cert(k.c, TETHER_TLS_CERT_DER, der, n, &n), TETHER_OK);
    ck_assert_uint_eq(n, (size_t)want_len);
    ck_assert(memcmp(der, want_der, n) == 0);
    free(der);
    OPENSSL_free(want_der);

    ck_assert_int_eq(tether_conn_tls_peer_cert(k.c, TETHER_TLS_CERT_PEM, NULL, 0, &n),
                     TETHER_EMSGSIZE);
    char *pem = malloc(n);
    ck_assert_int_eq(tether_conn_tls_peer_cert(k.c, TETHER_TLS_CERT_PEM, pem, n, &n), TETHER_OK);
    ck_assert_uint_eq(strlen(pem) + 1, n);
    FILE *f = fopen(CERT("long.pem"), "r");
    ck_assert_ptr_nonnull(f);
    char text[8192];
    size_t tl = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[tl] = '\0';
    ck_assert_str_eq(pem, text);
    free(pem);

    ck_assert_int_eq(tether_conn_tls_peer_cert(k.c, 7, NULL, 0, &n), TETHER_EINVAL);
    ck_assert_int_eq(tether_conn_tls_peer_cert(k.c, TETHER_TLS_CERT_DER, NULL, 5, &n),
                     TETHER_EINVAL);
    ck_assert_int_eq(tether_conn_tls_peer_cert(k.c, TETHER_TLS_CERT_DER, NULL, 0, NULL),
                     TETHER_EINVAL);
    ck_assert_int_eq(tether_conn_tls_peer_cert(NULL, TETHER_TLS_CERT_DER, NULL, 0, &n),
                     TETHER_EINVAL);

    /* The OpenSSL objects. */
    SSL *ssl = tether_conn_tls_ssl(k.c);
    ck_assert_ptr_nonnull(ssl);
    ck_assert_str_eq(SSL_get_version(ssl), info.version);
    X509 *peer = tether_conn_tls_peer_x509(k.c);
    ck_assert_ptr_nonnull(peer);
    ck_assert_int_eq(X509_cmp(peer, file), 0);
    X509_free(file);
    ck_assert_ptr_null(tether_conn_tls_ssl(NULL));
    ck_assert_ptr_null(tether_conn_tls_peer_x509(NULL));
    cli_finish(&k);
    tether_tls_config_unref(ccfg);
    srv_down();
}
END_TEST

/* A server without client certificates: nothing to copy; a connection
 * that is not TLS has no certificate and no SSL. */
START_TEST(no_peer_certificate_and_not_tls)
{
    srv_up(&(struct cfg_spec){.cert = "server", .client_auth = TETHER_TLS_CLIENT_AUTH_OPTIONAL});
    tether_tls_config *ccfg = mk_cfg(&(struct cfg_spec){0});
    struct cli k;
    ck_assert_int_eq(cli_dial(&k, "localhost", ccfg), TETHER_OK);
    ck_assert_uint_eq(S.info.truncated, 0);
    ck_assert_uint_eq(strlen(S.info.peer_sans), 0);
    cli_finish(&k);
    tether_tls_config_unref(ccfg);
    srv_down();

    tether_listener *l = th_listen_tcp(NULL);
    tether_conn *c = NULL;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, th_url_of(l), NULL, NULL), TETHER_OK);
    size_t n = 1;
    ck_assert_int_eq(tether_conn_tls_peer_cert(c, TETHER_TLS_CERT_DER, NULL, 0, &n),
                     TETHER_ENOTSUP);
    ck_assert_uint_eq(n, 0);
    ck_assert_ptr_null(tether_conn_tls_ssl(c));
    tether_conn_abort(c);
    tether_listener_close(l);
}
END_TEST

/* A hook that writes on another TLS connection of its loop: all of a
 * loop's TLS connections share one socket BIO, pointed at the connection
 * that calls into OpenSSL; the handshake the hook runs in must go on with
 * its own socket, and the other connection's bytes must reach its own
 * peer, whole. */
struct writer {
    tether_conn *other;
    int calls;
    int send_rv;
};

static int writing_hook(const tether_tls_verify_info *vi, char *reason, size_t reason_size,
                        void *ud)
{
    (void)vi;
    (void)reason;
    (void)reason_size;
    struct writer *w = ud;
    static uint8_t big[48 * 1024]; /* past the write batch: written at once */
    memset(big, 'x', sizeof big);
    w->calls++;
    w->send_rv = tether_conn_send(w->other, big, sizeof big);
    return 0;
}

static bool srv_has_msgs(void *arg)
{
    return S.msgs >= *(long *)arg;
}

START_TEST(hook_writes_on_another_connection)
{
    srv_up(&(struct cfg_spec){.cert = "server", .no_resumption = true});
    tether_tls_config *plain = mk_cfg(&(struct cfg_spec){0});
    struct cli k1;
    ck_assert_msg(cli_dial(&k1, "localhost", plain) == TETHER_OK, "%s", k1.connect_detail);

    struct writer w = {.other = k1.c};
    tether_tls_config *hooked =
        mk_cfg(&(struct cfg_spec){.hook = writing_hook, .hook_ud = &w, .no_resumption = true});
    struct cli k2;
    for (int round = 1; round <= 3; round++) {
        ck_assert_msg(cli_dial(&k2, "localhost", hooked) == TETHER_OK, "round %d: %s", round,
                      k2.connect_detail);
        ck_assert_int_eq(w.calls, round);
        ck_assert_int_eq(w.send_rv, TETHER_OK);
        long want = round;
        ck_assert(th_run_until_pred(srv_has_msgs, &want, 10000));
        ck_assert_int_eq(S.msgs, round);
        ck_assert_uint_eq(S.bytes, (size_t)round * 48 * 1024);
        ck_assert(!S.bad);
        ck_assert(!k1.closed);
        cli_finish(&k2);
        ck_assert_int_eq(k2.close_reason, TETHER_OK);
    }
    ck_assert_int_eq(S.errors, 0);
    cli_finish(&k1);
    ck_assert_int_eq(k1.close_reason, TETHER_OK);
    tether_tls_config_unref(hooked);
    tether_tls_config_unref(plain);
    srv_down();
}
END_TEST

/* ---- a reload while a server handshakes ---------------------------------- */

/* A server hook that reloads the server's certificates in the middle of
 * the handshake (after SNI chose one), then accepts or refuses. */
struct reloader {
    int refuse; /* 0 to accept, else the alert */
    int calls;
    int reload_rv;
};

static int reloading_hook(const tether_tls_verify_info *vi, char *reason, size_t reason_size,
                          void *ud)
{
    (void)vi;
    struct reloader *r = ud;
    r->calls++;
    tether_error err;
    r->reload_rv = tether_tls_config_reload(S.cfg, NULL, NULL, &err);
    if (r->refuse != 0) {
        snprintf(reason, reason_size, "refused after a reload");
    }
    return r->refuse;
}

/* An accepted connection holds its generation of certificates (its SNI
 * certificates) while it handshakes and lets it go at the end, or when it
 * fails: a reload meanwhile leaves both to the connection's own generation
 * (AddressSanitizer's leak check and use-after-free catch the rest). */
START_TEST(reload_while_handshaking_keeps_the_sni_certificate)
{
    struct reloader r = {0};
    srv_up(&(struct cfg_spec){.cert = "server",
                              .client_auth = TETHER_TLS_CLIENT_AUTH_REQUIRED,
                              .hook = reloading_hook,
                              .hook_ud = &r,
                              .no_resumption = true});
    tether_error err;
    ck_assert_int_eq(tether_tls_config_add_cert(S.cfg, CERT("alt.pem"), CERT("alt.key"), &err),
                     TETHER_OK);
    S.greet = true;
    tether_tls_config *ccfg = mk_cfg(&(struct cfg_spec){
        .cert = "client", .server_name = "alt.localhost", .no_resumption = true});
    for (int round = 1; round <= 2; round++) {
        struct cli k;
        ck_assert_msg(cli_dial(&k, "127.0.0.1", ccfg) == TETHER_OK, "%s", k.connect_detail);
        cli_wait_msgs(&k, 1);
        ck_assert_int_eq(r.calls, round);
        ck_assert_int_eq(r.reload_rv, TETHER_OK);
        ck_assert_int_eq(S.accepted, round);
        ck_assert_str_eq(S.info.server_name, "alt.localhost");
        ck_assert_str_eq(S.info.peer_common_name, "alice");
        cli_finish(&k);
        ck_assert_int_eq(k.close_reason, TETHER_OK);
    }
    /* Refused after the reload: the failing handshake lets go too. */
    r.refuse = TETHER_TLS_ALERT_CERTIFICATE_REVOKED;
    struct cli k;
    ck_assert_int_eq(cli_dial(&k, "127.0.0.1", ccfg), TETHER_ECERT);
    ASSERT_HAS(k.connect_detail,
               "the server rejected our certificate (alert 'certificate revoked')");
    cli_wait_closed(&k);
    ck_assert(th_run_until_pred(srv_has_error, NULL, 10000));
    ASSERT_HAS(S.error_detail, "refused after a reload");
    ck_assert_int_eq(r.calls, 3);
    ck_assert_int_eq(r.reload_rv, TETHER_OK);
    ck_assert_int_eq(S.accepted, 2);
    tether_tls_config_unref(ccfg);
    srv_down();
}
END_TEST

Suite *tls_peer_suite(void);
Suite *tls_peer_suite(void)
{
    Suite *s = suite_create("tls_peer");
    TCase *tc = tcase_create("loopback");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, client_pins_the_server_certificate, 0, 2);
    tcase_add_test(tc, client_hook_and_insecure_skip_verify);
    tcase_add_loop_test(tc, server_authorises_clients_by_spiffe_id, 0, 2);
    tcase_add_loop_test(tc, hook_alerts_reach_the_peer, 0, (int)(sizeof ALERTS / sizeof ALERTS[0]));
    tcase_add_test(tc, tls13_verdict_without_resumption_and_without_waiting);
    tcase_add_test(tc, peer_certificate_and_truncation);
    tcase_add_test(tc, no_peer_certificate_and_not_tls);
    tcase_add_test(tc, hook_writes_on_another_connection);
    tcase_add_test(tc, reload_while_handshaking_keeps_the_sni_certificate);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(tls_peer_suite());
}
