/* SPDX-License-Identifier: MIT */
/* TLS configuration objects: options, SSL_CTX generations, certificate
 * reload and the client session cache.
 *
 * A tether_tls_config is immutable apart from two things that change under
 * its mutex: the current generation of SSL_CTXs (swapped by reload and by
 * adding an SNI certificate) and the client session cache. Everything is
 * read from files when the generation is built, so that a bad file is
 * reported by the call that names it and never at connection time.
 *
 * Every SSL_CTX uses TLS_method(), so one configuration serves both roles:
 * the role is chosen per connection (SSL_set_connect_state or
 * SSL_set_accept_state), and so is the verification mode. */
#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#define TLS_DEFAULT_HS_TIMEOUT_MS 10000
#define TLS_CACHE_MAX 256      /* targets remembered by one client configuration */
#define TLS_CACHE_PER_TARGET 2 /* sessions kept per target (OpenSSL servers send 2 tickets) */

/* Forward-secret AEAD suites only, the strongest first (Mozilla's
 * "intermediate" list without the DHE suites). TLS 1.3 keeps OpenSSL's
 * default suites, which are all AEAD. */
#define TLS12_DEFAULT_CIPHERS                                                                      \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

static const unsigned char TLS_SID_CTX[] = "tether";

struct tether__tls_cache_entry {
    char *key;
    uint64_t used; /* cache_tick of the last use, for eviction */
    int n;
    SSL_SESSION *sess[TLS_CACHE_PER_TARGET]; /* oldest first */
};

void tether_tls_opts_init_sized(tether_tls_opts *opts, size_t size)
{
    if (opts == NULL || size < sizeof(size_t)) {
        return;
    }
    tether_tls_opts d;
    memset(&d, 0, sizeof d);
    d.size = size;
    d.handshake_timeout_ms = TLS_DEFAULT_HS_TIMEOUT_MS;
    tether__sized_fill(opts, size, &d, sizeof d);
}

void tether__tls_err_text(unsigned long e, char *buf, size_t len)
{
    if (e == 0) {
        snprintf(buf, len, "unknown OpenSSL error");
        return;
    }
    if (ERR_GET_LIB(e) == ERR_LIB_SYS) {
        snprintf(buf, len, "%s", strerror(ERR_GET_REASON(e)));
        return;
    }
    const char *r = ERR_reason_error_string(e);
    if (r != NULL) {
        snprintf(buf, len, "%s", r);
    } else {
        ERR_error_string_n(e, buf, len);
    }
}

/* The newest queued OpenSSL error as text; clears the queue. */
static const char *ossl_last(char *buf, size_t len)
{
    tether__tls_err_text(ERR_peek_last_error(), buf, len);
    ERR_clear_error();
    return buf;
}

static char *dup_or_null(const char *s, bool *oom)
{
    if (s == NULL) {
        return NULL;
    }
    char *d = strdup(s);
    if (d == NULL) {
        *oom = true;
    }
    return d;
}

/* Reports a file that cannot be opened with the system's reason, which is
 * clearer than the OpenSSL error for the most common mistake. */
static int check_readable(const char *what, const char *path, tether_error *err)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return tether__set_error(err, TETHER_ECERT, "cannot read %s '%s': %s", what, path,
                                 strerror(errno));
    }
    fclose(f);
    return TETHER_OK;
}

/* "a,b" -> "\x01a\x01b" (RFC 7301 wire format). */
static int alpn_encode(const char *text, unsigned char **out, unsigned *out_len, tether_error *err)
{
    size_t tl = strlen(text);
    unsigned char *w = malloc(tl + 1);
    if (w == NULL) {
        return tether__set_error(err, TETHER_ENOMEM, "out of memory");
    }
    size_t wl = 0;
    const char *p = text;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma != NULL ? (size_t)(comma - p) : strlen(p);
        if (n == 0 || n > 255) {
            free(w);
            return tether__set_error(err, TETHER_EINVAL,
                                     "invalid ALPN list '%s': every protocol name must be 1 to "
                                     "255 bytes, separated by commas",
                                     text);
        }
        w[wl++] = (unsigned char)n;
        memcpy(w + wl, p, n);
        wl += n;
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
    }
    *out = w;
    *out_len = (unsigned)wl;
    return TETHER_OK;
}

static int version_to_ossl(tether_tls_version v, int dflt, const char *field, int *out,
                           tether_error *err)
{
    switch (v) {
    case TETHER_TLS_VERSION_DEFAULT:
        *out = dflt;
        return TETHER_OK;
    case TETHER_TLS_VERSION_1_2:
        *out = TLS1_2_VERSION;
        return TETHER_OK;
    case TETHER_TLS_VERSION_1_3:
        *out = TLS1_3_VERSION;
        return TETHER_OK;
    default:
        return tether__set_error(err, TETHER_EINVAL,
                                 "%s %d is not supported (use TETHER_TLS_VERSION_1_2 or _1_3)",
                                 field, (int)v);
    }
}

/* ---- generations ------------------------------------------------------- */

static X509_STORE *trust_store_new(const tether_tls_config *cfg, tether_error *err)
{
    char ebuf[160];
    X509_STORE *st = X509_STORE_new();
    if (st == NULL) {
        tether__set_error(err, TETHER_ENOMEM, "out of memory");
        return NULL;
    }
    if (cfg->ca_file != NULL) {
        if (check_readable("CA file", cfg->ca_file, err) != TETHER_OK) {
            X509_STORE_free(st);
            return NULL;
        }
        if (X509_STORE_load_file(st, cfg->ca_file) != 1) {
            tether__set_error(err, TETHER_ECERT, "cannot load CA file '%s': %s", cfg->ca_file,
                              ossl_last(ebuf, sizeof ebuf));
            X509_STORE_free(st);
            return NULL;
        }
    }
    if (cfg->ca_dir != NULL && X509_STORE_load_path(st, cfg->ca_dir) != 1) {
        tether__set_error(err, TETHER_ECERT, "cannot use CA directory '%s': %s", cfg->ca_dir,
                          ossl_last(ebuf, sizeof ebuf));
        X509_STORE_free(st);
        return NULL;
    }
    if (cfg->ca_file == NULL && cfg->ca_dir == NULL) {
        /* The system store, as a bundle file plus a hashed directory.
         * X509_STORE_set_default_paths() would also add OpenSSL 3's
         * "store" lookup, which lists the whole certificate directory on
         * every lookup that misses -- once per handshake on a server that
         * builds its chain, a fifth of the handshake time in tether_bench.
         * A missing file or directory is not an error: the system may
         * provide only one of them. */
        X509_STORE_load_file(st, X509_get_default_cert_file());
        X509_STORE_load_path(st, X509_get_default_cert_dir());
    }
    ERR_clear_error();
    return st;
}

static int ctx_load_cert(SSL_CTX *ctx, const char *cert, const char *key, tether_error *err)
{
    char ebuf[160];
    int rv = check_readable("certificate", cert, err);
    if (rv == TETHER_OK) {
        rv = check_readable("private key", key, err);
    }
    if (rv != TETHER_OK) {
        return rv;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        return tether__set_error(err, TETHER_ECERT, "cannot load certificate '%s': %s", cert,
                                 ossl_last(ebuf, sizeof ebuf));
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
            ERR_clear_error();
            return tether__set_error(err, TETHER_ECERT,
                                     "private key '%s' does not match certificate '%s'", key, cert);
        }
        return tether__set_error(err, TETHER_ECERT, "cannot load private key '%s': %s", key,
                                 ossl_last(ebuf, sizeof ebuf));
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        return tether__set_error(err, TETHER_ECERT,
                                 "private key '%s' does not match certificate '%s'", key, cert);
    }
    /* Complete the chain to send once, now, instead of in every handshake
     * (OpenSSL's auto-chaining searches the trust store per handshake). A
     * chain that cannot be completed is sent as the file gives it, which
     * is what auto-chaining would have done too. */
    SSL_CTX_build_cert_chain(ctx, SSL_BUILD_CHAIN_FLAG_NO_ROOT | SSL_BUILD_CHAIN_FLAG_IGNORE_ERROR);
    ERR_clear_error();
    /* A leaf issued by a root leaves an empty chain, which every SSL
     * would copy (48 bytes per connection): no chain sends the same. */
    STACK_OF(X509) *chain = NULL;
    if (SSL_CTX_get0_chain_certs(ctx, &chain) == 1 && chain != NULL && sk_X509_num(chain) == 0) {
        SSL_CTX_clear_chain_certs(ctx);
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_NO_AUTO_CHAIN);
    return TETHER_OK;
}

/* The SSL_CTX ex_data indexes of tether__tls_ctx_cfg() and
 * tether__tls_ctx_gen(); -1 if OpenSSL was out of memory. */
static pthread_once_t g_cfg_idx_once = PTHREAD_ONCE_INIT;
static int g_cfg_idx = -1;
static int g_gen_idx = -1;

static void cfg_idx_init(void)
{
    g_cfg_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    g_gen_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

tether_tls_config *tether__tls_ctx_cfg(const SSL_CTX *ctx)
{
    return g_cfg_idx >= 0 ? SSL_CTX_get_ex_data(ctx, g_cfg_idx) : NULL;
}

struct tether__tls_gen *tether__tls_ctx_gen(const SSL_CTX *ctx)
{
    return SSL_CTX_get_ex_data(ctx, g_gen_idx); /* (set: gen_build) */
}

/* Marks ctx as g's (tether__tls_ctx_gen); false if out of memory. */
static bool ctx_set_gen(SSL_CTX *ctx, struct tether__tls_gen *g, tether_error *err)
{
    if (g_gen_idx < 0 || SSL_CTX_set_ex_data(ctx, g_gen_idx, g) != 1) {
        ERR_clear_error();
        tether__set_error(err, TETHER_ENOMEM, "cannot create an SSL_CTX: out of memory");
        return false;
    }
    return true;
}

static SSL_CTX *ctx_new(const tether_tls_config *cfg, X509_STORE *store, const char *cert,
                        const char *key, tether_error *err)
{
    char ebuf[160];
    pthread_once(&g_cfg_idx_once, cfg_idx_init);
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL || g_cfg_idx < 0 || SSL_CTX_set_ex_data(ctx, g_cfg_idx, (void *)cfg) != 1) {
        tether__set_error(err, TETHER_ENOMEM, "cannot create an SSL_CTX: %s",
                          ossl_last(ebuf, sizeof ebuf));
        SSL_CTX_free(ctx);
        return NULL;
    }
    int rv = TETHER_OK;
    SSL_CTX_set_min_proto_version(ctx, cfg->min_version);
    SSL_CTX_set_max_proto_version(ctx, cfg->max_version);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    /* Partial writes let one SSL_write produce exactly one record, so that
     * a write blocked on the socket is retried with a known length; the
     * moving buffer lets the retry come from wherever the bytes are now.
     * No SSL_MODE_RELEASE_BUFFERS: releasing the buffers around every
     * record cost an allocation and a free per record; each SSL sets it
     * for its handshake only, and tls_idle.c releases the buffers once a
     * connection has been idle for a while. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Read-ahead: one recv() takes the header and body of a record (and of
     * those behind it) instead of two reads per record. */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set1_cert_store(ctx, store);
    SSL_CTX_set_session_id_context(ctx, TLS_SID_CTX, sizeof TLS_SID_CTX - 1);
    if (SSL_CTX_set_cipher_list(ctx, cfg->ciphers != NULL ? cfg->ciphers : TLS12_DEFAULT_CIPHERS) !=
        1) {
        ERR_clear_error();
        rv = tether__set_error(err, TETHER_EINVAL, "no usable TLS 1.2 cipher in '%s'",
                               cfg->ciphers != NULL ? cfg->ciphers : TLS12_DEFAULT_CIPHERS);
    } else if (cfg->ciphersuites != NULL && SSL_CTX_set_ciphersuites(ctx, cfg->ciphersuites) != 1) {
        ERR_clear_error();
        rv = tether__set_error(err, TETHER_EINVAL, "no usable TLS 1.3 cipher suite in '%s'",
                               cfg->ciphersuites);
    }
    if (cfg->no_resumption) {
        /* A server that asks for client certificates still sends one TLS
         * 1.3 ticket: it is how a client learns that its certificate was
         * accepted (see transport_tls.c, tls_await_verdict). With
         * SSL_OP_NO_TICKET it is a stateful ticket, and with the session
         * cache off it names a session that is never found again, so
         * nothing is ever resumed. */
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, cfg->client_auth != TETHER_TLS_CLIENT_AUTH_NONE ? 1 : 0);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    } else {
        /* Clients: sessions go to our own cache (keyed by target) through
         * the callback. Servers: stateless tickets only, so that the
         * server keeps no per-session memory. */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_BOTH | SSL_SESS_CACHE_NO_INTERNAL);
        SSL_CTX_sess_set_new_cb(ctx, tether__tls_new_session_cb);
    }
    if (cfg->alpn != NULL) {
        /* Offered when this context acts as a client, selected from when
         * it acts as a server. */
        if (SSL_CTX_set_alpn_protos(ctx, cfg->alpn, cfg->alpn_len) != 0) {
            rv = tether__set_error(err, TETHER_ENOMEM, "out of memory");
        }
        SSL_CTX_set_alpn_select_cb(ctx, tether__tls_alpn_select_cb, (void *)cfg);
    }
    SSL_CTX_set_client_cert_cb(ctx, tether__tls_client_cert_cb);
    if (cfg->verify_cb != NULL) {
        /* OpenSSL's verification, then the application's verdict. */
        SSL_CTX_set_cert_verify_callback(ctx, tether__tls_cert_verify_cb, NULL);
    }
    if (rv == TETHER_OK && cert != NULL) {
        rv = ctx_load_cert(ctx, cert, key, err);
    }
    if (rv != TETHER_OK) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (cert != NULL) {
        tether__tls_sigalgs_note(ctx); /* for servers (tls_sigalgs.c) */
    }
    ERR_clear_error();
    return ctx;
}

void tether__tls_gen_unref(struct tether__tls_gen *g)
{
    if (g == NULL || atomic_fetch_sub(&g->refs, 1) != 1) {
        return;
    }
    SSL_CTX_free(g->ctx);
    for (size_t i = 0; i < g->nsni; i++) {
        SSL_CTX_free(g->sni[i].ctx);
        X509_free(g->sni[i].leaf);
    }
    free(g->sni);
    free(g);
}

struct tether__tls_gen *tether__tls_gen_get(tether_tls_config *cfg)
{
    pthread_mutex_lock(&cfg->mu);
    struct tether__tls_gen *g = cfg->gen;
    atomic_fetch_add(&g->refs, 1);
    pthread_mutex_unlock(&cfg->mu);
    return g;
}

/* Builds a generation from the configuration's files, with cert/key as the
 * default certificate (either may be NULL for a client configuration) and
 * the SNI certificates listed in cfg plus an optional extra pair. */
static int gen_build(const tether_tls_config *cfg, const char *cert, const char *key,
                     const char *extra_cert, const char *extra_key, struct tether__tls_gen **out,
                     tether_error *err)
{
    *out = NULL;
    tether_error local; /* the helpers report their code through err */
    if (err == NULL) {
        err = &local;
    }
    X509_STORE *store = trust_store_new(cfg, err);
    if (store == NULL) {
        return err->code;
    }
    int rv = TETHER_OK;
    struct tether__tls_gen *g = calloc(1, sizeof *g);
    size_t nsni = cfg->nsni + (extra_cert != NULL ? 1 : 0);
    if (g == NULL || (nsni > 0 && (g->sni = calloc(nsni, sizeof *g->sni)) == NULL)) {
        free(g);
        X509_STORE_free(store);
        return tether__set_error(err, TETHER_ENOMEM, "out of memory");
    }
    atomic_init(&g->refs, 1);
    g->ctx = ctx_new(cfg, store, cert, key, err);
    if (g->ctx == NULL || !ctx_set_gen(g->ctx, g, err)) {
        rv = err->code;
    }
    for (size_t i = 0; rv == TETHER_OK && i < nsni; i++) {
        const char *c = i < cfg->nsni ? cfg->sni_cert[i] : extra_cert;
        const char *k = i < cfg->nsni ? cfg->sni_key[i] : extra_key;
        SSL_CTX *sctx = ctx_new(cfg, store, c, k, err);
        if (sctx == NULL) {
            rv = err->code;
            break;
        }
        g->sni[i].ctx = sctx;
        g->sni[i].leaf = SSL_CTX_get0_certificate(sctx);
        X509_up_ref(g->sni[i].leaf);
        g->nsni++;
        if (!ctx_set_gen(sctx, g, err)) {
            rv = err->code;
        }
    }
    X509_STORE_free(store); /* each SSL_CTX holds its own reference */
    if (rv == TETHER_OK && g->nsni > 0) {
        SSL_CTX_set_tlsext_servername_callback(g->ctx, tether__tls_servername_cb);
        SSL_CTX_set_tlsext_servername_arg(g->ctx, g);
    }
    if (rv != TETHER_OK) {
        tether__tls_gen_unref(g);
        return rv;
    }
    *out = g;
    return TETHER_OK;
}

/* ---- configuration objects --------------------------------------------- */

static void config_free(tether_tls_config *cfg)
{
    tether__tls_gen_unref(cfg->gen);
    for (size_t i = 0; i < cfg->ncache; i++) {
        free(cfg->cache[i].key);
        for (int j = 0; j < cfg->cache[i].n; j++) {
            SSL_SESSION_free(cfg->cache[i].sess[j]);
        }
    }
    free(cfg->cache);
    for (size_t i = 0; i < cfg->nsni; i++) {
        free(cfg->sni_cert[i]);
        free(cfg->sni_key[i]);
    }
    free(cfg->sni_cert);
    free(cfg->sni_key);
    free(cfg->ca_file);
    free(cfg->ca_dir);
    free(cfg->cert_file);
    free(cfg->key_file);
    free(cfg->ciphers);
    free(cfg->ciphersuites);
    free(cfg->server_name);
    free(cfg->alpn_text);
    free(cfg->alpn);
    pthread_mutex_destroy(&cfg->mu);
    free(cfg);
}

int tether_tls_config_new(tether_tls_config **out, const tether_tls_opts *opts,
                          tether_error *out_err)
{
    tether__error_clear(out_err);
    if (out == NULL) {
        return tether__set_error(out_err, TETHER_EINVAL, "out is NULL");
    }
    *out = NULL;
    if (opts != NULL && opts->size < sizeof(size_t)) {
        return tether__set_error(out_err, TETHER_EINVAL,
                                 "options not initialised with tether_tls_opts_init()");
    }
    tether_tls_opts o;
    tether_tls_opts_init(&o);
    if (opts != NULL) {
        tether__opts_merge(&o, sizeof o, opts);
    }
    if ((o.cert_file == NULL) != (o.key_file == NULL)) {
        return tether__set_error(out_err, TETHER_EINVAL,
                                 "cert_file and key_file must be given together");
    }
    if (o.client_auth != TETHER_TLS_CLIENT_AUTH_NONE &&
        o.client_auth != TETHER_TLS_CLIENT_AUTH_OPTIONAL &&
        o.client_auth != TETHER_TLS_CLIENT_AUTH_REQUIRED) {
        return tether__set_error(out_err, TETHER_EINVAL, "unknown client_auth %d",
                                 (int)o.client_auth);
    }
    int minv;
    int maxv;
    int rv = version_to_ossl(o.min_version, TLS1_2_VERSION, "min_version", &minv, out_err);
    if (rv == TETHER_OK) {
        rv = version_to_ossl(o.max_version, TLS1_3_VERSION, "max_version", &maxv, out_err);
    }
    if (rv != TETHER_OK) {
        return rv;
    }
    if (minv > maxv) {
        return tether__set_error(out_err, TETHER_EINVAL, "min_version is above max_version");
    }
    if (o.server_name != NULL && (o.server_name[0] == '\0' || strlen(o.server_name) > 255)) {
        return tether__set_error(out_err, TETHER_EINVAL,
                                 "server_name must be 1 to 255 characters long");
    }

    tether_tls_config *cfg = calloc(1, sizeof *cfg);
    if (cfg == NULL) {
        return tether__set_error(out_err, TETHER_ENOMEM, "out of memory");
    }
    atomic_init(&cfg->refs, 1);
    pthread_mutex_init(&cfg->mu, NULL);
    bool oom = false;
    cfg->ca_file = dup_or_null(o.ca_file, &oom);
    cfg->ca_dir = dup_or_null(o.ca_dir, &oom);
    cfg->cert_file = dup_or_null(o.cert_file, &oom);
    cfg->key_file = dup_or_null(o.key_file, &oom);
    cfg->ciphers = dup_or_null(o.ciphers, &oom);
    cfg->ciphersuites = dup_or_null(o.ciphersuites, &oom);
    cfg->server_name = dup_or_null(o.server_name, &oom);
    cfg->alpn_text = dup_or_null(o.alpn, &oom);
    cfg->min_version = minv;
    cfg->max_version = maxv;
    cfg->handshake_timeout_ms =
        o.handshake_timeout_ms == 0 ? TLS_DEFAULT_HS_TIMEOUT_MS : o.handshake_timeout_ms;
    cfg->client_auth = o.client_auth;
    cfg->insecure = o.insecure_skip_verify;
    cfg->no_resumption = o.no_resumption;
    cfg->no_client_cert_wait = o.no_client_cert_wait;
    cfg->verify_cb = o.verify_cb;
    cfg->verify_ud = o.verify_userdata;
    if (oom) {
        rv = tether__set_error(out_err, TETHER_ENOMEM, "out of memory");
    }
    if (rv == TETHER_OK && o.alpn != NULL) {
        rv = alpn_encode(o.alpn, &cfg->alpn, &cfg->alpn_len, out_err);
    }
    if (rv == TETHER_OK) {
        rv = gen_build(cfg, cfg->cert_file, cfg->key_file, NULL, NULL, &cfg->gen, out_err);
    }
    if (rv != TETHER_OK) {
        config_free(cfg);
        return rv;
    }
    *out = cfg;
    return TETHER_OK;
}

tether_tls_config *tether_tls_config_ref(tether_tls_config *cfg)
{
    if (cfg != NULL) {
        atomic_fetch_add(&cfg->refs, 1);
    }
    return cfg;
}

void tether_tls_config_unref(tether_tls_config *cfg)
{
    if (cfg != NULL && atomic_fetch_sub(&cfg->refs, 1) == 1) {
        config_free(cfg);
    }
}

/* Installs a new generation; the old one lives on in the connections that
 * use it. Called with cfg->mu held. */
static void gen_swap_locked(tether_tls_config *cfg, struct tether__tls_gen *g)
{
    struct tether__tls_gen *old = cfg->gen;
    cfg->gen = g;
    tether__tls_gen_unref(old);
}

int tether_tls_config_add_cert(tether_tls_config *cfg, const char *cert_file, const char *key_file,
                               tether_error *out_err)
{
    tether__error_clear(out_err);
    if (cfg == NULL || cert_file == NULL || key_file == NULL) {
        return tether__set_error(out_err, TETHER_EINVAL, "a NULL argument");
    }
    pthread_mutex_lock(&cfg->mu);
    int rv = TETHER_OK;
    char **nc = realloc(cfg->sni_cert, (cfg->nsni + 1) * sizeof *nc);
    if (nc != NULL) {
        cfg->sni_cert = nc;
    }
    char **nk = realloc(cfg->sni_key, (cfg->nsni + 1) * sizeof *nk);
    if (nk != NULL) {
        cfg->sni_key = nk;
    }
    char *c = strdup(cert_file);
    char *k = strdup(key_file);
    if (nc == NULL || nk == NULL || c == NULL || k == NULL) {
        rv = tether__set_error(out_err, TETHER_ENOMEM, "out of memory");
    }
    struct tether__tls_gen *g = NULL;
    if (rv == TETHER_OK) {
        rv = gen_build(cfg, cfg->cert_file, cfg->key_file, c, k, &g, out_err);
    }
    if (rv == TETHER_OK) {
        cfg->sni_cert[cfg->nsni] = c;
        cfg->sni_key[cfg->nsni] = k;
        cfg->nsni++;
        gen_swap_locked(cfg, g);
    } else {
        free(c);
        free(k);
    }
    pthread_mutex_unlock(&cfg->mu);
    return rv;
}

int tether_tls_config_reload(tether_tls_config *cfg, const char *cert_file, const char *key_file,
                             tether_error *out_err)
{
    tether__error_clear(out_err);
    if (cfg == NULL) {
        return tether__set_error(out_err, TETHER_EINVAL, "cfg is NULL");
    }
    pthread_mutex_lock(&cfg->mu);
    const char *cert = cert_file != NULL ? cert_file : cfg->cert_file;
    const char *key = key_file != NULL ? key_file : cfg->key_file;
    int rv = TETHER_OK;
    char *c = NULL;
    char *k = NULL;
    if (cert == NULL || key == NULL) {
        rv = tether__set_error(out_err, TETHER_EINVAL,
                               "the configuration has no certificate to reload; give cert_file "
                               "and key_file");
    } else {
        c = strdup(cert);
        k = strdup(key);
        if (c == NULL || k == NULL) {
            rv = tether__set_error(out_err, TETHER_ENOMEM, "out of memory");
        }
    }
    struct tether__tls_gen *g = NULL;
    if (rv == TETHER_OK) {
        rv = gen_build(cfg, c, k, NULL, NULL, &g, out_err);
    }
    if (rv == TETHER_OK) {
        free(cfg->cert_file);
        free(cfg->key_file);
        cfg->cert_file = c;
        cfg->key_file = k;
        gen_swap_locked(cfg, g);
    } else {
        free(c);
        free(k);
    }
    pthread_mutex_unlock(&cfg->mu);
    return rv;
}

int tether__tls_handshake_timeout_ms(const tether_tls_config *cfg)
{
    return cfg->handshake_timeout_ms;
}

/* ---- the default client configuration ---------------------------------- */

/* Shared by every dialled tls:// connection without a configuration of its
 * own, so that the system trust store is loaded once and sessions resume
 * across connections. Created on first use and kept for the life of the
 * process. */
static pthread_mutex_t g_default_mu = PTHREAD_MUTEX_INITIALIZER;
static tether_tls_config *g_default;

static int default_client_config(tether_tls_config **out, tether_error *err)
{
    pthread_mutex_lock(&g_default_mu);
    int rv = TETHER_OK;
    if (g_default == NULL) {
        rv = tether_tls_config_new(&g_default, NULL, err);
    }
    *out = rv == TETHER_OK ? tether_tls_config_ref(g_default) : NULL;
    pthread_mutex_unlock(&g_default_mu);
    return rv;
}

int tether__tls_config_select(tether_tls_config **out, tether_tls_config *given, bool server,
                              tether_error *err)
{
    tether_tls_config *t = given;
    *out = NULL;
    if (server) {
        if (t == NULL) {
            return tether__set_error(err, TETHER_EINVAL,
                                     "a tls:// listener needs a TLS configuration with a "
                                     "certificate: set tether_listen_opts.conn_opts->tls "
                                     "(see tether_tls_config_new())");
        }
        if (t->cert_file == NULL) {
            return tether__set_error(err, TETHER_EINVAL,
                                     "the TLS configuration of a tls:// listener has no "
                                     "certificate: set tether_tls_opts.cert_file and key_file");
        }
        *out = tether_tls_config_ref(t);
        return TETHER_OK;
    }
    if (t != NULL) {
        *out = tether_tls_config_ref(t);
        return TETHER_OK;
    }
    tether_tls_config *d = NULL;
    int rv = default_client_config(&d, err);
    if (rv != TETHER_OK) {
        return rv;
    }
    *out = d;
    return TETHER_OK;
}

/* ---- client session cache ---------------------------------------------- */

static struct tether__tls_cache_entry *cache_find(tether_tls_config *cfg, const char *key)
{
    for (size_t i = 0; i < cfg->ncache; i++) {
        if (strcmp(cfg->cache[i].key, key) == 0) {
            return &cfg->cache[i];
        }
    }
    return NULL;
}

static bool session_usable(SSL_SESSION *s)
{
    if (!SSL_SESSION_is_resumable(s)) {
        return false;
    }
    time_t now = time(NULL);
    return SSL_SESSION_get_time(s) + SSL_SESSION_get_timeout(s) > now;
}

SSL_SESSION *tether__tls_cache_get(tether_tls_config *cfg, const char *key)
{
    SSL_SESSION *found = NULL;
    pthread_mutex_lock(&cfg->mu);
    struct tether__tls_cache_entry *e = cache_find(cfg, key);
    while (e != NULL && e->n > 0 && found == NULL) {
        SSL_SESSION *s = e->sess[e->n - 1]; /* the newest */
        if (!session_usable(s)) {
            SSL_SESSION_free(s);
            e->n--;
            continue;
        }
        if (SSL_SESSION_get_protocol_version(s) >= TLS1_3_VERSION) {
            /* TLS 1.3 tickets are used once (RFC 8446, appendix C.4): a
             * reused ticket would let observers link the connections. */
            e->n--;
            found = s;
        } else {
            SSL_SESSION_up_ref(s);
            found = s;
        }
        e->used = ++cfg->cache_tick;
    }
    pthread_mutex_unlock(&cfg->mu);
    return found;
}

void tether__tls_cache_put(tether_tls_config *cfg, const char *key, SSL_SESSION *sess)
{
    pthread_mutex_lock(&cfg->mu);
    struct tether__tls_cache_entry *e = cache_find(cfg, key);
    if (e == NULL) {
        if (cfg->ncache == TLS_CACHE_MAX) {
            /* Evict the target used least recently. */
            size_t lru = 0;
            for (size_t i = 1; i < cfg->ncache; i++) {
                if (cfg->cache[i].used < cfg->cache[lru].used) {
                    lru = i;
                }
            }
            e = &cfg->cache[lru];
            for (int j = 0; j < e->n; j++) {
                SSL_SESSION_free(e->sess[j]);
            }
            free(e->key);
        } else {
            if (cfg->ncache % 16 == 0) {
                struct tether__tls_cache_entry *bigger =
                    realloc(cfg->cache, (cfg->ncache + 16) * sizeof *bigger);
                if (bigger == NULL) {
                    pthread_mutex_unlock(&cfg->mu);
                    SSL_SESSION_free(sess);
                    return;
                }
                cfg->cache = bigger;
            }
            e = &cfg->cache[cfg->ncache++];
        }
        memset(e, 0, sizeof *e);
        e->key = strdup(key);
        if (e->key == NULL) {
            /* Drop the slot again: it is the last one or an evicted one. */
            *e = cfg->cache[cfg->ncache - 1];
            cfg->ncache--;
            pthread_mutex_unlock(&cfg->mu);
            SSL_SESSION_free(sess);
            return;
        }
    }
    if (e->n == TLS_CACHE_PER_TARGET) {
        SSL_SESSION_free(e->sess[0]);
        memmove(&e->sess[0], &e->sess[1], (TLS_CACHE_PER_TARGET - 1) * sizeof e->sess[0]);
        e->n--;
    }
    e->sess[e->n++] = sess;
    e->used = ++cfg->cache_tick;
    pthread_mutex_unlock(&cfg->mu);
}
